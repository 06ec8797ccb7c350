"""Stand-in for MinIO, for docker-compose.test.yml only: moto's S3 server on port 9000, whose
objects survive a restart as MinIO's do on its minio-data volume.

moto keeps everything in memory. This wrapper loads the state saved under /data when it starts,
and saves it (one pickle of moto's S3 backend: buckets, objects, uploads in progress, tags,
lifecycle rules; written to a temporary file, synced, then renamed over the old one):
- by a saver thread, as soon as a request that changes something has been answered, so a SIGKILL
  loses at most the writes of the save in progress;
- once more on SIGTERM (`docker compose stop` or `down`), after the server has stopped.
Requests that change something are handled one at a time, under the lock the saver takes, so a
save never sees a half-made change.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from moto.core import DEFAULT_ACCOUNT_ID
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.models import s3_backends
from werkzeug.serving import make_server

STATE = Path(os.environ.get("S3_STANDIN_STATE", "/data/moto-s3.pickle"))
READS = {"GET", "HEAD", "OPTIONS"}
PORT = int(os.environ.get("S3_STANDIN_PORT", "9000"))
LOCK = threading.Lock()  # held by a request that changes something, and while pickling
WRITING = threading.Lock()  # one save at a time: the saver's, or the last one on stop
DIRTY = threading.Event()


def backend() -> Any:
    return s3_backends[DEFAULT_ACCOUNT_ID]["aws"]


def load() -> None:
    if STATE.exists():
        state = pickle.loads(STATE.read_bytes())
        backend().__dict__.update(state)
        # moto's registry of bucket names, outside the backend: without it a CreateBucket of a
        # loaded bucket (the createbucket service, at every `up`) replaces it with an empty one.
        for name, bucket in state["buckets"].items():
            s3_backends.bucket_accounts[name] = (bucket.partition, bucket.account_id)
        say(f"loaded {STATE} ({STATE.stat().st_size} bytes, {len(state['buckets'])} buckets)")


def save() -> None:
    with WRITING:
        with LOCK:
            DIRTY.clear()
            data = pickle.dumps(backend().__dict__, protocol=pickle.HIGHEST_PROTOCOL)
        partial = STATE.with_suffix(".partial")
        with partial.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        partial.replace(STATE)


def saver() -> None:
    while True:
        DIRTY.wait()
        save()


def saving(app: Callable[..., Iterable[bytes]]) -> Callable[..., Iterable[bytes]]:
    """The WSGI app, with each request that changes something handled whole under LOCK."""

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] in READS:
            return app(environ, start_response)
        with LOCK:
            body = b"".join(app(environ, start_response))
        DIRTY.set()
        return [body]

    return wrapped


def say(text: str) -> None:
    print(f"s3-standin: {text}", flush=True)


def main() -> None:
    STATE.parent.mkdir(parents=True, exist_ok=True)
    load()
    app = saving(DomainDispatcherApplication(create_backend_app))
    server = make_server("0.0.0.0", PORT, app, True, request_handler=MotoRequestHandler)

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    threading.Thread(target=saver, daemon=True).start()
    say(f"listening on {PORT}")
    server.serve_forever()
    save()
    say(f"saved {STATE} on stop")
    sys.exit(0)


if __name__ == "__main__":
    main()
