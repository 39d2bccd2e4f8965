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
        self.tasks = set()  # strong references: a pending relay is never garbage-collected

    async def handle(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, headers = parse(head)
        parts = request_line.split(" ")
        method, path = (parts + ["", ""])[:2]
        if path.startswith("/__count/"):
            await self.control(writer, path)
            return
        self.serial += 1
        entry = {"n": self.serial, "method": method, "path": path, "range": headers.get("range"),
                 "body_bytes": 0, "t0": time.monotonic(), "t_first": None, "t1": None}
        # Logged at once and counted as bytes go through, so a relay that never ends still counts.
        self.log.append(entry)
        task = asyncio.current_task()
        self.tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()
            return
        up_writer.write(head)
        upload = asyncio.ensure_future(pipe(reader, up_writer))
        total, head_length = 0, None
        buffered = b""
        try:
            while True:
                chunk = await up_reader.read(65536)
                if not chunk:
                    break
                if entry["t_first"] is None:
                    if self.delay:
                        await asyncio.sleep(max(0.0, entry["t0"] + self.delay - time.monotonic()))
                    entry["t_first"] = time.monotonic()
                total += len(chunk)
                if head_length is None:
                    buffered += chunk
                    end = buffered.find(b"\r\n\r\n")
                    if end >= 0:
                        head_length = total - len(buffered) + end + 4
                        buffered = b""
                if head_length is not None:
                    entry["body_bytes"] = total - head_length
                writer.write(chunk)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            entry["body_bytes"] = max(0, total - (head_length or total))
            entry["t1"] = time.monotonic()
            self.tasks.discard(task)
            upload.cancel()
            for w in (writer, up_writer):
                try:
                    w.close()
                except Exception:
                    pass

    async def control(self, writer, path):
        if path.startswith("/__count/log"):
            body = json.dumps(self.log).encode()
            status = b"200 OK"
        elif path.startswith("/__count/delay?ms="):
            self.delay = float(path.split("=", 1)[1]) / 1000
            body, status = json.dumps({"delay_ms": self.delay * 1000}).encode(), b"200 OK"
        else:
            body, status = b'{"error": "not_found"}', b"404 Not Found"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\nConnection: close\r\n"
                     + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        try:
            await writer.drain()
        finally:
            writer.close()


async def pipe(reader, writer):
    try:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                break
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


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
    server = await asyncio.start_server(counter.handle, "127.0.0.1", args.port, backlog=1024, limit=HEAD_LIMIT)
    loop = asyncio.get_running_loop()
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
