"""What every test server in scripts/ does about its lifetime."""
import os
import signal
import threading
import time


def unblock_termination_signals():
    """A parent that starts us from a Swift/Dispatch thread passes on a blocked SIGTERM; unblock it
    so a test's stop() ends us at once instead of after its SIGKILL timeout."""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})


def exit_with_parent():
    """Exit once the process that started us is gone (we are re-parented), so a crashed test run
    leaves no server behind. Runs on a daemon thread."""
    def watch():
        parent = os.getppid()
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:
                os._exit(0)
    threading.Thread(target=watch, daemon=True).start()


def announce_and_wait(port):
    """Prints "LISTENING <port>" (what TestServer waits for), then blocks until SIGTERM/SIGINT or
    until the parent is gone; the caller then shuts down."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    exit_with_parent()
    print(f"LISTENING {port}", flush=True)
    stop.wait()
