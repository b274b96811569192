"""moto's S3 server with its buckets kept in a directory, so data outlive a restart:

    python -m infra.local.s3persist --data-dir D [-H 127.0.0.1] [-p 9000]

(infra/local/s3server.py starts it for `LocalS3(data_dir=D)`.) moto's server keeps everything
in memory and has no file-backed mode; its S3 objects are picklable (moto's FakeKey defines
__getstate__ for this), so the buckets are restored from D/s3.pickle at start and written back
as a whole snapshot, atomically (temporary file, fsync, rename): a second after the last write
request when writes pause, every 30 s while they go on, and at a clean stop (SIGTERM, Ctrl-C).
A kill -9 loses the writes since the last snapshot (at most ~30 s), never the snapshot itself.
Only S3 is kept (IAM users and multipart uploads in progress are not).
"""
from __future__ import annotations

import argparse
import logging
import os
import pickle
import signal
import sys
import threading
import time

SNAPSHOT = "s3.pickle"
QUIET, LONGEST = 1.0, 30.0     # seconds: save after a pause in writes, and at least this often
WRITES = {"PUT", "POST", "DELETE"}
log = logging.getLogger("s3persist")


def s3_accounts() -> dict:
    from moto.s3.models import s3_backends

    return s3_backends


def restore(path: str) -> int:
    """Put the buckets of the snapshot at `path` back into moto; returns how many."""
    if not os.path.exists(path):
        return 0
    with open(path, "rb") as f:
        saved = pickle.load(f)            # {account id: {bucket name: FakeBucket}}
    for account, buckets in saved.items():
        s3_accounts()[account]["global"].buckets.update(buckets)
    return sum(len(b) for b in saved.values())


def snapshot(path: str) -> None:
    saved = {account: dict(backend["global"].buckets)
             for account, backend in list(s3_accounts().items()) if backend["global"].buckets}
    temporary = f"{path}.tmp"
    with open(temporary, "wb") as f:
        pickle.dump(saved, f, protocol=pickle.HIGHEST_PROTOCOL)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


class Persisted:
    """WSGI middleware: write requests run one at a time and never during a snapshot (so the
    snapshot is of a consistent state); a background thread saves when writes pause."""

    def __init__(self, app, path: str):
        self.app, self.path = app, path
        self.lock = threading.Lock()
        self.dirty_since = self.last_write = None
        threading.Thread(target=self._saver, daemon=True).start()

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") not in WRITES:
            return self.app(environ, start_response)
        with self.lock:
            response = list(self.app(environ, start_response))   # the change is made in here
            now = time.monotonic()
            self.dirty_since, self.last_write = self.dirty_since or now, now
        return response

    def save(self) -> None:
        with self.lock:
            if self.dirty_since is not None:
                snapshot(self.path)
                self.dirty_since = None

    def _saver(self) -> None:
        while True:
            time.sleep(0.2)
            now, since, last = time.monotonic(), self.dirty_since, self.last_write
            if since is not None and (now - last >= QUIET or now - since >= LONGEST):
                try:
                    self.save()
                except Exception:       # a full disk: say so, keep serving, try again later
                    log.exception("could not save %s", self.path)


def serve(host: str, port: int, data_dir: str) -> None:
    from moto.moto_server.werkzeug_app import (DomainDispatcherApplication, MotoRequestHandler,
                                               create_backend_app)
    from werkzeug.serving import make_server

    os.makedirs(data_dir, exist_ok=True)
    path = os.path.join(data_dir, SNAPSHOT)
    print(f"restored {restore(path)} bucket(s) from {path}", flush=True)
    app = Persisted(DomainDispatcherApplication(create_backend_app), path)
    server = make_server(host, port, app, threaded=True, request_handler=MotoRequestHandler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    app.save()
    print(f"saved to {path}", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.s3persist", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="where the buckets are kept")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=9000)
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
