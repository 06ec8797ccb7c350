"""A local mail catcher for the native stack: `python scripts/mailcatcher.py PORT DIRECTORY`.

Used by `./setup.sh` without a Docker engine when SMTP_HOST is not set, so the alert emails can
be read without a mail server: each message lands in DIRECTORY as one `.eml` file (written to a
temporary name, then renamed, so a reader never sees half a message).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Mailbox:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        path = self.directory / f"{stamp}-{self.count:04d}.eml"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(envelope.original_content or envelope.content)
        temporary.rename(path)
        print(f"mail: {path.name} from {envelope.mail_from} to {', '.join(envelope.rcpt_tos)}")
        sys.stdout.flush()
        return "250 OK"


def main() -> int:
    port, directory = int(sys.argv[1]), Path(sys.argv[2])
    directory.mkdir(parents=True, exist_ok=True)
    controller = Controller(Mailbox(directory), hostname="127.0.0.1", port=port)
    controller.start()
    print(f"mail: catching mail on 127.0.0.1:{port} into {directory}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    controller.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
