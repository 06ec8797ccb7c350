"""Stand-in for Mailpit, for docker-compose.test.yml only: SMTP on 1025, the mailbox on 8025.

aiosmtpd from the project's test image (no registry to pull Mailpit from). The HTTP side answers
the part of Mailpit's API the container test reads: GET /api/v1/messages (newest first, with
From, To and Subject) and GET /readyz.
"""

from __future__ import annotations

import json
import threading
import time
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

MESSAGES: list[dict[str, Any]] = []
LOCK = threading.Lock()


class Inbox:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = message_from_bytes(envelope.original_content or envelope.content)
        entry = {
            "ID": str(len(MESSAGES) + 1),
            "From": {"Address": envelope.mail_from},
            "To": [{"Address": address} for address in envelope.rcpt_tos],
            "Subject": str(message.get("Subject", "")),
            "Created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with LOCK:
            MESSAGES.insert(0, entry)
        print(f"mailbox: message from {envelope.mail_from}: {entry['Subject']}", flush=True)
        return "250 OK"


class Pages(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/readyz":
            self._send(200, b"ok", "text/plain")
        elif self.path.startswith("/api/v1/messages"):
            with LOCK:
                body = {"total": len(MESSAGES), "messages": list(MESSAGES)}
            self._send(200, json.dumps(body).encode(), "application/json")
        else:
            self._send(404, b"not found", "text/plain")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def main() -> None:
    Controller(Inbox(), hostname="0.0.0.0", port=1025).start()
    ThreadingHTTPServer(("0.0.0.0", 8025), Pages).serve_forever()


if __name__ == "__main__":
    main()
