#!/usr/bin/env python3
"""A byte-counting TCP relay in front of the S3 test server, for the serving benchmarks. stdlib only.

    python bench/count_proxy.py --target 127.0.0.1:PORT [--port 0]

Prints "LISTENING <port>" once it accepts connections. Every client connection is relayed to the
target as it is, in both directions; for each one the proxy records the first request's method,
path and Range header and how many response body bytes the target sent through it (the response
bytes minus the first response head). moto answers one request per connection
(`Connection: close`), so a connection is a request.

    GET /__count/log     JSON list of connections: n, method, path, range, body_bytes (so far),
                         t0, t_first, t1 (monotonic seconds: request seen, first response byte
                         relayed, relay closed; null until they happen)
    GET /__count/delay?ms=N   from now on, hold every response's first byte N ms (0: off): the
                         first-byte latency of S3 in a region, which loopback does not have

With a delay the relay models S3 as seen from the same region: each request pays it once, the
bytes that follow stream as fast as moto sends them.

Exits on SIGTERM/SIGINT, and when the process that started it dies (it polls its parent).
"""
import argparse
import asyncio
import json
import os
import signal
import sys
import time

HEAD_LIMIT = 1 << 20


class Counter:
    def __init__(self, target):
        self.target = target
        self.delay = 0.0  # seconds each response's first byte is held
        self.log = []
        self.serial = 0
        self.tasks = set()  # strong references: a pending connect is never garbage-collected

    def control(self, transport, path):
        if path.startswith("/__count/log"):
            body = json.dumps(self.log).encode()
            status = b"200 OK"
        elif path.startswith("/__count/delay?ms="):
            self.delay = float(path.split("=", 1)[1]) / 1000
            body, status = json.dumps({"delay_ms": self.delay * 1000}).encode(), b"200 OK"
        else:
            body, status = b'{"error": "not_found"}', b"404 Not Found"
        transport.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                        + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        transport.close()


class Relay(asyncio.Protocol):
    """One client connection, relayed to the target once its request head is in.

    asyncio's protocols rather than its streams: the relay is called with each chunk as it
    arrives and writes it on at once, with no task per direction and no awaits per chunk (half
    the CPU per request of the stream version, which mattered with moto and the nodes sharing
    two cores). Flow control: a side whose outgoing buffer fills pauses reading on the other."""

    def __init__(self, counter):
        self.counter = counter
        self.client = self.upstream = None
        self.head = bytearray()
        self.entry = None
        self.pending = []  # request bytes that came before the target's connection was up
        self.client_eof = self.control_request = self.finished = False
        self.total = 0  # response bytes relayed
        self.head_length = None  # of the response; None until its end is seen
        self.seen = bytearray()  # response bytes so far, until the end of its head is seen
        self.held = None  # response chunks held for the first-byte delay
        self.upstream_done = False

    # the client's side

    def connection_made(self, transport):
        self.client = transport

    def data_received(self, data):
        if self.control_request:
            return
        if self.entry is not None:
            if self.upstream is not None:
                self.upstream.write(data)
            else:
                self.pending.append(data)
            return
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            if len(self.head) > HEAD_LIMIT:
                self.client.close()
            return
        request_line, headers = parse(bytes(self.head[:end + 4]))
        parts = request_line.split(" ")
        method, path = (parts + ["", ""])[:2]
        if path.startswith("/__count/"):
            self.control_request = True
            self.counter.control(self.client, path)
            return
        self.counter.serial += 1
        # Logged at once and counted as bytes go through, so a relay that never ends still counts.
        self.entry = {"n": self.counter.serial, "method": method, "path": path, "range": headers.get("range"),
                      "body_bytes": 0, "t0": time.monotonic(), "t_first": None, "t1": None}
        self.counter.log.append(self.entry)
        self.pending.append(bytes(self.head))
        task = asyncio.get_running_loop().create_task(self.connect())
        self.counter.tasks.add(task)
        task.add_done_callback(self.counter.tasks.discard)

    def eof_received(self):
        if self.entry is None:  # the client gave up before its request head was complete
            self.client.close()
            return False
        self.client_eof = True
        if self.upstream is not None and self.upstream.can_write_eof():
            self.upstream.write_eof()
        return True  # half-closed: the response still comes back

    def connection_lost(self, exc):
        if self.entry is not None:
            self.finish()

    def pause_writing(self):
        if self.upstream is not None:
            self.upstream.pause_reading()

    def resume_writing(self):
        if self.upstream is not None:
            self.upstream.resume_reading()

    async def connect(self):
        loop = asyncio.get_running_loop()
        try:
            upstream, _ = await loop.create_connection(lambda: Upstream(self), *self.counter.target)
        except OSError:
            self.client.close()
            return
        if self.finished:  # the client went away meanwhile
            upstream.close()
            return
        self.upstream = upstream
        upstream.write(b"".join(self.pending))
        self.pending = None
        if self.client_eof and upstream.can_write_eof():
            upstream.write_eof()

    # the target's side (called by Upstream)

    def from_upstream(self, data):
        if self.entry["t_first"] is None:
            wait = self.entry["t0"] + self.counter.delay - time.monotonic() if self.counter.delay else 0
            if self.held is not None or wait > 0:
                if self.held is None:
                    self.held = []
                    self.upstream.pause_reading()
                    asyncio.get_running_loop().call_later(wait, self.release)
                self.held.append(data)
                return
            self.entry["t_first"] = time.monotonic()
        self.forward(data)

    def release(self):
        self.entry["t_first"] = time.monotonic()
        held, self.held = self.held, None
        for data in held:
            self.forward(data)
        if self.upstream_done:
            self.finish()
        elif not self.finished:
            self.upstream.resume_reading()

    def forward(self, data):
        self.total += len(data)
        if self.head_length is None:
            self.seen += data
            end = self.seen.find(b"\r\n\r\n")
            if end >= 0:
                self.head_length = self.total - len(self.seen) + end + 4
                self.seen = None
        if self.head_length is not None:
            self.entry["body_bytes"] = self.total - self.head_length
        self.client.write(data)

    def from_upstream_end(self):
        self.upstream_done = True
        if self.held is None:
            self.finish()

    def finish(self):
        if self.finished:
            return
        self.finished = True
        self.entry["body_bytes"] = max(0, self.total - (self.head_length or self.total))
        self.entry["t1"] = time.monotonic()
        for transport in (self.client, self.upstream):
            if transport is not None:
                transport.close()  # what was written still goes out first


class Upstream(asyncio.Protocol):
    def __init__(self, relay):
        self.relay = relay

    def data_received(self, data):
        self.relay.from_upstream(data)

    def eof_received(self):
        self.relay.from_upstream_end()

    def connection_lost(self, exc):
        self.relay.from_upstream_end()

    def pause_writing(self):
        self.relay.client.pause_reading()

    def resume_writing(self):
        self.relay.client.resume_reading()


def parse(head):
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers


async def watch_parent(parent):
    while True:
        await asyncio.sleep(1)
        if os.getppid() != parent:
            os._exit(0)


async def main_async(args):
    host, port = args.target.rsplit(":", 1)
    counter = Counter((host, int(port)))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Relay(counter), "127.0.0.1", args.port, backlog=1024)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: os._exit(0))
    asyncio.ensure_future(watch_parent(os.getppid()))
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the S3 server")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
