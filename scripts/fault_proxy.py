#!/usr/bin/env python3
"""A TCP proxy in front of an HTTP server that injects faults, for S3 client tests. stdlib only.

    python scripts/fault_proxy.py --target 127.0.0.1:PORT [--plan MODES] [--default MODE]

Prints "LISTENING <port>" once it accepts connections. Each client connection carries one
request (the proxy closes it after the response; moto does the same) and gets the next mode of
the plan, or the default mode once the plan is used up. Modes:

    pass          forward the request and the whole response
    503           answer 503 ServiceUnavailable (S3 XML error body) without asking the target
    slowdown      answer 503 SlowDown
    500           answer 500 InternalError
    reset:K       forward the response head and K body bytes, then reset the connection (RST)
    stall:K       forward the head and K body bytes, then send nothing more (until the client
                  gives up, or --stall-seconds pass)
    close         read the request and close without answering
    slow:B        forward the request; forward the response head at once and its body at B bytes
                  a second (a slow source whose transfer is under way for a while)
    delay:MS      forward the request and the whole response, its first byte held until MS
                  milliseconds after the request arrived (a slow first byte, as S3 under load)

A mode may name the requests it is for: `503@/clip-bucket/` applies only to requests whose path
starts with `/clip-bucket/`; others pass, and a plan entry waits for a request it applies to.

Control requests, answered by the proxy itself:
    POST /__proxy/plan   body {"plan": [MODE, ...], "default": MODE} replaces the plan; with
                         "mix": {MODE: WEIGHT, ...} (and "seed": N) instead of "default", each
                         request past the plan draws its mode from the weights (a brownout: 30%
                         SlowDown, the rest delay:200), repeatably for one seed
    GET  /__proxy/log    JSON list of the requests seen: method, path, range, if_match, mode,
                         bytes (response body bytes forwarded to the client so far)

Exits on SIGTERM/SIGINT or when the process that started it dies.
"""
import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

from test_server_lifecycle import exit_with_parent, unblock_termination_signals

ERRORS = {
    "503": (503, "Service Unavailable", "ServiceUnavailable", "Please reduce your request rate."),
    "slowdown": (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    "500": (500, "Internal Server Error", "InternalError", "We encountered an internal error. Please try again."),
}


class Proxy:
    def __init__(self, target, plan, default, stall_seconds):
        self.target = target
        self.plan = list(plan)
        self.default = default
        self.stall_seconds = stall_seconds
        self.mix = None  # [(mode, cumulative weight)], drawn per request instead of the default
        self.rng = random.Random(0)
        self.log = []
        self.lock = threading.Lock()
        self.counter = 0

    @staticmethod
    def applies(entry, path):
        """The mode of a plan entry for this path, or None when the entry is for other paths."""
        mode, _, prefix = entry.partition("@")
        return mode if not prefix or path.startswith(prefix) else None

    def next_mode(self, path):
        with self.lock:
            if self.plan:
                mode = self.applies(self.plan[0], path)
                if mode is None:
                    return "pass"
                self.plan.pop(0)
                return mode
            if self.mix:
                x = self.rng.random() * self.mix[-1][1]
                return next(self.applies(m, path) or "pass" for m, upto in self.mix if x < upto)
            return self.applies(self.default, path) or "pass"

    def set_mix(self, weights):
        """weights: {MODE: WEIGHT}; an empty or missing mix uses the default mode again."""
        self.mix, total = [], 0.0
        for mode, weight in (weights or {}).items():
            total += float(weight)
            self.mix.append((mode, total))
        self.mix = self.mix if total > 0 else None

    def handle(self, client):
        try:
            head, rest = read_head(client)
            if head is None:
                return
            arrived = time.monotonic()
            method, path, headers = parse_head(head)
            body = read_exact(client, rest, int(headers.get("content-length", "0")))
            if path.startswith("/__proxy/"):
                self.control(client, method, path, body)
                return
            mode = self.next_mode(path)
            entry = {"method": method, "path": path, "mode": mode, "range": headers.get("range"),
                     "if_match": headers.get("if-match"), "bytes": 0}
            with self.lock:
                self.counter += 1
                entry["n"] = self.counter
                self.log.append(entry)
            if mode in ERRORS:
                send_error(client, *ERRORS[mode])
            elif mode == "close":
                pass
            elif mode == "pass":
                self.forward(client, head + body, entry, limit=None, after=None)
            elif mode.startswith("reset:"):
                self.forward(client, head + body, entry, limit=int(mode[6:]), after="reset")
            elif mode.startswith("stall:"):
                self.forward(client, head + body, entry, limit=int(mode[6:]), after="stall")
            elif mode.startswith("slow:"):
                self.forward(client, head + body, entry, limit=None, after=None, rate=int(mode[5:]))
            elif mode.startswith("delay:"):
                self.forward(client, head + body, entry, limit=None, after=None,
                             hold_until=arrived + int(mode[6:]) / 1000.0)
            else:
                send_error(client, 500, "Internal Server Error", "ProxyBadMode", f"unknown mode {mode}")
        except OSError:
            pass
        finally:
            try:
                client.close()
            except OSError:
                pass

    def forward(self, client, request, entry, limit, after, rate=None, hold_until=None):
        upstream = socket.create_connection(self.target)
        try:
            upstream.sendall(request)
            head, rest = read_head(upstream)
            if head is None:
                return
            if hold_until is not None:
                time.sleep(max(0.0, hold_until - time.monotonic()))
            client.sendall(head)
            started = time.monotonic()
            sent = 0
            chunk = rest
            while True:
                if chunk:
                    if limit is not None and sent + len(chunk) >= limit:
                        client.sendall(chunk[: limit - sent])
                        sent = limit
                        entry["bytes"] = sent
                        break
                    if rate:
                        # Pieces of a twentieth of a second each, sent no earlier than the rate allows.
                        step = max(1, rate // 20)
                        for offset in range(0, len(chunk), step):
                            time.sleep(max(0.0, started + sent / rate - time.monotonic()))
                            client.sendall(chunk[offset:offset + step])
                            sent += len(chunk[offset:offset + step])
                            entry["bytes"] = sent
                    else:
                        client.sendall(chunk)
                        sent += len(chunk)
                        entry["bytes"] = sent
                chunk = upstream.recv(65536)
                if not chunk:
                    return
            if after == "reset":
                time.sleep(0.05)  # let the K bytes reach the client before the RST discards the buffer
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            elif after == "stall":
                client.settimeout(self.stall_seconds)
                try:
                    while client.recv(65536):
                        pass
                except OSError:
                    pass
        finally:
            upstream.close()

    def control(self, client, method, path, body):
        if method == "POST" and path == "/__proxy/plan":
            spec = json.loads(body or b"{}")
            with self.lock:
                self.plan = list(spec.get("plan", []))
                self.default = spec.get("default", self.default)
                self.set_mix(spec.get("mix"))
                self.rng = random.Random(spec.get("seed", 0))
            payload = b'{"status": "ok"}'
        elif method == "GET" and path == "/__proxy/log":
            with self.lock:
                payload = json.dumps(self.log).encode()
        else:
            send_error(client, 404, "Not Found", "NoSuchControl", path)
            return
        client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                       + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)


def read_head(sock):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
        if len(data) > 1 << 20:
            return None, b""
    end = data.index(b"\r\n\r\n") + 4
    return data[:end], data[end:]


def parse_head(head):
    lines = head.decode("latin-1").split("\r\n")
    method, path = lines[0].split(" ")[:2]
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


def read_exact(sock, data, length):
    while len(data) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def send_error(sock, status, reason, code, message):
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
            f"<RequestId>FAULTPROXY{int(time.time() * 1000) % 100000}</RequestId></Error>").encode()
    sock.sendall(f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                 "Connection: close\r\n\r\n".encode() + body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="HOST:PORT of the server behind the proxy")
    parser.add_argument("--plan", default="", help="comma-separated modes for the first connections")
    parser.add_argument("--default", default="pass", help="mode once the plan is used up")
    parser.add_argument("--stall-seconds", type=float, default=60.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()

    host, port = args.target.rsplit(":", 1)
    plan = [m for m in args.plan.split(",") if m]
    proxy = Proxy((host, int(port)), plan, args.default, args.stall_seconds)

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    listener.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    signal.signal(signal.SIGINT, lambda *_: os._exit(0))
    unblock_termination_signals()
    exit_with_parent()
    print(f"LISTENING {listener.getsockname()[1]}", flush=True)
    while True:
        client, _ = listener.accept()
        threading.Thread(target=proxy.handle, args=(client,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
