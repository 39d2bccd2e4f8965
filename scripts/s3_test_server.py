#!/usr/bin/env python3
"""moto's S3 API server on a loopback port, for tests and benchmarks.

    python scripts/s3_test_server.py [--host 127.0.0.1] [--port 0]

Prints "LISTENING <port>" once requests are accepted, and exits on SIGTERM/SIGINT or when the
process that started it dies (so a crashed test run leaves no server behind).
"""
import argparse
import os
import signal
import sys
import threading

from test_server_lifecycle import exit_with_parent, unblock_termination_signals

from moto.server import ThreadedMotoServer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    unblock_termination_signals()

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    _, port = server.get_host_and_port()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    exit_with_parent()
    print(f"LISTENING {port}", flush=True)
    stop.wait()
    # moto's own shutdown waits for open keep-alive connections; a test server need not.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
