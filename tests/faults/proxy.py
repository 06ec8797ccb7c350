"""A fault-injecting HTTP proxy in front of the S3 server, on loopback.

boto3 is pointed at the proxy (S3_ENDPOINT_URL); the proxy forwards every request to moto and,
as its plan says, answers 500 or 503 SlowDown instead, resets the connection, stalls, cuts
a response off midway, or flips a byte in the middle of a request's body on its way to moto
(`flip`: the headers, Content-MD5 among them, unchanged). A plan fires at a rate (a seeded
random fraction of requests) or on the Nth matching request, and can be limited to a method
or a key pattern. Every fault is counted.

Apart from the plan, `ignore_conditions` makes the proxy a provider that ignores conditional
writes: it strips `If-None-Match` from every request (moto does not check signatures), so a
second conditional PUT replaces the object, as on an S3-compatible service without them.
"""

from __future__ import annotations

import http.client
import random
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("error500", "slowdown", "reset", "stall", "cut", "flip")


@dataclass
class Plan:
    fault: str = "none"
    rate: float = 0.0  # a fraction of matching requests
    nth: set[int] = field(default_factory=set)  # or these matching requests (1-based)
    method: str | None = None
    path: str | None = None  # a regular expression over the request path
    stall_seconds: float = 3.0
    seed: int = 7

    def __post_init__(self) -> None:
        assert self.fault in (*FAULTS, "none")
        self._random = random.Random(self.seed)

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or method == self.method) and (
            self.path is None or re.search(self.path, path) is not None
        )


class FaultProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str) -> None:
        self.upstream = urlsplit(upstream)
        self.plan = Plan()
        self.lock = threading.Lock()
        self.seen = 0  # matching requests
        self.injected: dict[str, int] = {}
        self.requests = 0
        self.ignore_conditions = False  # strip If-None-Match: a provider that ignores it
        self.stripped = 0  # requests whose If-None-Match was stripped
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def set(self, plan: Plan) -> None:
        with self.lock:
            self.plan, self.seen = plan, 0

    def clear(self) -> None:
        self.set(Plan())

    def decide(self, method: str, path: str) -> str:
        with self.lock:
            self.requests += 1
            plan = self.plan
            if plan.fault == "none" or not plan.matches(method, path):
                return "none"
            self.seen += 1
            hit = self.seen in plan.nth or (plan.rate > 0 and plan._random.random() < plan.rate)
            if hit:
                self.injected[plan.fault] = self.injected.get(plan.fault, 0) + 1
                return plan.fault
            return "none"

    def total_injected(self) -> int:
        return sum(self.injected.values())

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client killed or reset mid-request is what these tests do on purpose

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


_SLOWDOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_INTERNAL = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message></Error>"
)


class _Handler(BaseHTTPRequestHandler):
    server: FaultProxy
    protocol_version = "HTTP/1.1"

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = self.server.decide(self.command, self.path)
        if fault == "reset":
            self.connection.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            self.connection.close()
            self.close_connection = True
            return
        if fault in ("error500", "slowdown"):
            status, payload = (503, _SLOWDOWN) if fault == "slowdown" else (500, _INTERNAL)
            self.send_response(status)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
            return
        if fault == "stall":
            time.sleep(self.server.plan.stall_seconds)
        if fault == "flip" and body:
            middle = len(body) // 2
            body = body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]
        upstream = self.server.upstream
        conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
        if self.server.ignore_conditions and "If-None-Match" in self.headers:
            headers = {k: v for k, v in headers.items() if k.lower() != "if-none-match"}
            with self.server.lock:
                self.server.stripped += 1
        headers["Host"] = f"{upstream.hostname}:{upstream.port}"
        conn.request(self.command, self.path, body=body, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        conn.close()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        # A HEAD answer has no body but says how long the object is.
        length = response.getheader("Content-Length") if self.command == "HEAD" else None
        self.send_header("Content-Length", length or str(len(payload)))
        self.end_headers()
        if fault == "cut" and self.command == "GET" and len(payload) > 1:
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    def log_message(self, format: str, *args: object) -> None:
        pass
