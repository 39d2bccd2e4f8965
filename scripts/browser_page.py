#!/usr/bin/env python3
"""Loads a page in a real browser, in real time, and prints its DOM as JSON once it is done.

Two engines, both through selenium and their WebDriver:
  - chromium: headless Chromium through chromedriver;
  - webkit: WebKitGTK's MiniBrowser (Safari's engine) on a private Xvfb display.
The page is loaded and a JavaScript condition (the page's own "done") is polled until it holds.
Nothing runs on virtual time, so a slow server makes a test slower, never wrong. Printed on stdout:

    {"url": ..., "seconds": ..., "dom": <document.documentElement.outerHTML>}

Exit status: 0 done; 2 bad arguments; 3 the browser is not installed; 4 the page or the condition
did not get there in time; 1 anything else. Every exit path stops Xvfb, the driver and the browser. If
this script alone is SIGKILLed, Xvfb and the driver die with it, and the browser follows (WebKit
is in the script's process group; Chromium talks to its driver over a pipe and exits when it
closes). Temporary files (the browser profile, logs) go under --temp-dir when given, for the
caller to remove whatever a killed run leaves.

    scripts/browser_page.py --browser chromium http://127.0.0.1:8080/ --wait-for "document.title"
    scripts/browser_page.py --browser webkit URL --wait-for "document.querySelector('#out[data-done]')"
"""
import argparse
import atexit
import ctypes
import glob
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from test_server_lifecycle import unblock_termination_signals

INSTALL_HINT = ("run `make test` (scripts/ensure-deps.sh installs chromium, chromium-driver, webkit2gtk-driver, xvfb, "
                "the GStreamer plugins and selenium)")
MINIBROWSER_GLOB = "/usr/lib/*/webkit2gtk-4.1/MiniBrowser"
OUTER_HTML = "return document.documentElement.outerHTML;"


class PageError(Exception):
    """A failure with the exit status that tells the caller what kind it was."""

    def __init__(self, message, status=1):
        super().__init__(message)
        self.status = status


class Watchdog:
    """Names the step under way and bounds it with SIGALRM, so a call that hangs in the driver
    (a browser that never starts leaves the session request unanswered) ends as an error."""

    def __init__(self):
        self.step, self.seconds = "starting", 0
        signal.signal(signal.SIGALRM, self.overrun)

    def begin(self, step, seconds):
        self.step, self.seconds = step, int(seconds) + 1
        signal.alarm(self.seconds)

    def overrun(self, signum, frame):
        raise PageError(f"{self.step} took longer than {self.seconds} s", 4)

    def stop(self):
        signal.alarm(0)


def die_with_parent():
    """In a child before exec: be killed if this script dies, even by SIGKILL."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def find_webkit():
    """The driver and browser executables, or an error that says how to install them."""
    driver = shutil.which("WebKitWebDriver")
    browsers = sorted(glob.glob(MINIBROWSER_GLOB))
    xvfb = shutil.which("Xvfb")
    missing = [name for name, path in (("WebKitWebDriver", driver), ("MiniBrowser", browsers), ("Xvfb", xvfb)) if not path]
    if missing:
        raise PageError(f"WebKit is not installed ({', '.join(missing)} missing): {INSTALL_HINT}", 3)
    return driver, browsers[0], xvfb


def find_chromium():
    """chromedriver and the Chromium it drives (the same Debian build), or an installation hint."""
    driver = shutil.which("chromedriver")
    browser = next((path for path in ("/usr/bin/chromium", "/usr/bin/chromium-browser") if os.access(path, os.X_OK)), None)
    missing = [name for name, path in (("chromedriver", driver), ("chromium", browser)) if not path]
    if missing:
        raise PageError(f"Chromium is not installed ({', '.join(missing)} missing): {INSTALL_HINT}", 3)
    return driver, browser


def descendants(pid):
    """Every process below pid, read from /proc (each after its parent)."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        parent = int(stat[stat.rindex(")") + 2:].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, queue = [], [pid]
    while queue:
        for child in children.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


class Session:
    """A WebDriver and its browser (with Xvfb for WebKit); `close()` is safe to call any number of times."""

    def __init__(self):
        self.xvfb = None
        self.service = None
        self.driver = None
        self.closed = False
        # What Xvfb, the driver and the browser print: its end goes into error messages.
        self.log = tempfile.NamedTemporaryFile(prefix="browser-page-", suffix=".log")
        self.profile = None

    def log_tail(self):
        self.log.flush()
        with open(self.log.name, "rb") as f:
            text = f.read()[-1500:].decode(errors="replace").strip()
        return f"\n--- the driver and browser said:\n{text}" if text else ""

    def start_display(self, xvfb, timeout):
        # -displayfd: Xvfb picks a free display itself and writes its number once it accepts
        # clients, so parallel runs never race for a number.
        read_end, write_end = os.pipe()
        self.xvfb = subprocess.Popen(
            [xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
            pass_fds=(write_end,), stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log,
            preexec_fn=die_with_parent)
        os.close(write_end)
        # Read through the newline: Xvfb writes the number and "\n" separately and exits if the
        # pipe is closed between the two.
        written, deadline = b"", time.monotonic() + timeout
        try:
            while not written.endswith(b"\n") and time.monotonic() < deadline:
                ready, _, _ = select.select([read_end], [], [], max(0, deadline - time.monotonic()))
                chunk = os.read(read_end, 32) if ready else b""
                if not chunk:
                    break
                written += chunk
        finally:
            os.close(read_end)
        number = written.decode().strip()
        if not written.endswith(b"\n") or not number.isdigit():
            raise PageError(f"Xvfb gave no display within {timeout} s (exit status {self.xvfb.poll()})")
        return f":{number}"

    def start_webkit(self, driver_path, browser_path, display, timeout):
        webdriver = import_selenium()
        from selenium.webdriver.webkitgtk.service import Service
        options = webdriver.WebKitGTKOptions()
        options.binary_location = browser_path
        # MiniBrowser refuses WebDriver sessions unless started for automation.
        options.add_argument("--automation")
        # Navigation returns at once and main() waits for the parsed document itself: a media
        # download that stalls holds back the load event, and with "eager" WebKitGTK's driver
        # leaves every later script call hanging.
        options.page_load_strategy = "none"
        environment = dict(os.environ, DISPLAY=display)
        self.service = Service(executable_path=driver_path, env=environment, log_output=self.log,
                               popen_kw={"preexec_fn": die_with_parent})
        self.driver = webdriver.WebKitGTK(options=options, service=self.service)
        return self.ready(timeout)

    def start_chromium(self, driver_path, browser_path, timeout):
        webdriver = import_selenium()
        from selenium.webdriver.chrome.service import Service
        # A browser still dying may write into its profile while it is removed: never an error.
        self.profile = tempfile.TemporaryDirectory(prefix="browser-page-chromium-", ignore_cleanup_errors=True)
        options = webdriver.ChromeOptions()
        options.binary_location = browser_path
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                         "--disable-dev-shm-usage", f"--user-data-dir={self.profile.name}",
                         # DevTools over a pipe, not a port: Chromium exits when its driver dies.
                         "--remote-debugging-pipe",
                         # Only fatal messages: the rest (D-Bus, UPower) would bury the useful end of
                         # the log that error messages quote.
                         "--log-level=3",
                         # Pages play clips without a click, and local test pages fetch their neighbours.
                         "--autoplay-policy=no-user-gesture-required", "--allow-file-access-from-files"):
            options.add_argument(argument)
        # As for WebKit: main() waits for the parsed document itself, not for every media download.
        options.page_load_strategy = "none"
        self.service = Service(executable_path=driver_path, log_output=self.log,
                               popen_kw={"preexec_fn": die_with_parent})
        self.driver = webdriver.Chrome(options=options, service=self.service)
        return self.ready(timeout)

    def ready(self, timeout):
        self.driver.set_page_load_timeout(timeout)
        self.driver.set_script_timeout(timeout)
        return self.driver

    def close(self):
        if self.closed:
            return
        self.closed = True
        # Known before anything stops: once the driver is gone its browser is re-parented.
        leftovers = descendants(os.getpid())
        if self.driver is not None:
            from selenium.webdriver.remote.command import Command
            try:
                # Ends the session, which closes the browser. Not driver.quit(): that also waits
                # up to 60 s for the driver to honour SIGTERM, which WebKitWebDriver does not always.
                self.driver.execute(Command.QUIT)
            except Exception:
                pass  # the processes are killed below either way
        for process in (self.service and self.service.process, self.xvfb):
            if process is not None and process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    process.kill()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.profile is not None:
            self.profile.cleanup()
        self.log.close()


def import_selenium():
    try:
        from selenium import webdriver
    except ImportError:
        raise PageError(f"selenium is not in this Python ({sys.executable}): {INSTALL_HINT}", 3)
    return webdriver


def wait_until(driver, condition, timeout):
    """Polls a JavaScript expression until it is truthy; while the page is still loading it may
    throw, and the last error is part of the timeout message."""
    deadline = time.monotonic() + timeout
    from selenium.common.exceptions import NoSuchFrameException
    probe = f"try {{ return [!!({condition}), null]; }} catch (e) {{ return [false, String(e)]; }}"
    while True:
        try:
            held, error = driver.execute_script(probe)
        except NoSuchFrameException as gone:
            # Navigation replaces the frame (and often the web process) under a running probe.
            held, error = False, f"no frame: {gone.msg}"
        if held:
            return
        if time.monotonic() >= deadline:
            raise PageError(f"`{condition}` did not hold within {timeout} s{f' (it threw {error})' if error else ''}; "
                            f"the page: {page_excerpt(driver)}", 4)
        time.sleep(0.1)


def page_excerpt(driver):
    try:
        return driver.execute_script(OUTER_HTML)[:3000]
    except Exception as error:
        return f"(unreadable: {error})"


def parse_arguments():
    parser = argparse.ArgumentParser(description="Load a page in Chromium or WebKit and print its DOM as JSON once a condition holds.")
    parser.add_argument("url")
    parser.add_argument("--browser", choices=("chromium", "webkit"), required=True)
    parser.add_argument("--wait-for", metavar="JS", required=True, help="a JavaScript expression to poll until it is truthy")
    parser.add_argument("--timeout", type=float, default=30, help="seconds for each of loading and waiting (default 30)")
    parser.add_argument("--temp-dir", metavar="DIR", help="put temporary files here (the browser's too), for the caller to remove")
    return parser.parse_args()


def main():
    arguments = parse_arguments()
    if arguments.temp_dir:
        # Before anything is created; the driver and browser inherit it.
        os.environ["TMPDIR"] = tempfile.tempdir = arguments.temp_dir
    # Children inherit the signal mask: unblocked here, Xvfb and the driver stop at SIGTERM.
    unblock_termination_signals()
    session = Session()
    atexit.register(session.close)

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    watchdog = Watchdog()
    began = time.monotonic()
    try:
        if arguments.browser == "webkit":
            driver_path, browser_path, xvfb = find_webkit()
            watchdog.begin("starting Xvfb", 20)
            display = session.start_display(xvfb, timeout=15)
            watchdog.begin("starting WebKitWebDriver and MiniBrowser", 60)
            driver = session.start_webkit(driver_path, browser_path, display, arguments.timeout)
        else:
            driver_path, browser_path = find_chromium()
            watchdog.begin("starting chromedriver and Chromium", 60)
            driver = session.start_chromium(driver_path, browser_path, arguments.timeout)
        # Each step below has its own driver-side timeout; the watchdog is the backstop.
        watchdog.begin(f"loading {arguments.url}", arguments.timeout + 10)
        driver.get(arguments.url)
        wait_until(driver, "location.href !== 'about:blank' && document.readyState !== 'loading'", arguments.timeout)
        watchdog.begin("waiting for the condition", arguments.timeout + 10)
        wait_until(driver, arguments.wait_for, arguments.timeout)
        dom = driver.execute_script(OUTER_HTML)
        watchdog.stop()
        print(json.dumps({"url": arguments.url, "seconds": round(time.monotonic() - began, 2), "dom": dom}))
        return 0
    except PageError as error:
        watchdog.stop()
        print(f"browser_page ({arguments.browser}): {error}{session.log_tail() if error.status != 3 else ''}", file=sys.stderr)
        return error.status
    except Exception as error:
        watchdog.stop()
        print(f"browser_page ({arguments.browser}): {watchdog.step}: {type(error).__name__}: {error}{session.log_tail()}", file=sys.stderr)
        return 1
    finally:
        watchdog.begin(f"stopping {arguments.browser}", 15)
        session.close()
        watchdog.stop()


if __name__ == "__main__":
    sys.exit(main())
