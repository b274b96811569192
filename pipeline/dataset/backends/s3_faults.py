"""What a real object store does to a request on a bad day, and how the S3 backend survives it.

botocore retries a request (standard mode, ATTEMPTS tries in all, with backoff) until its
headers arrive: 503 SlowDown, 500 InternalError, a reset connection, a timeout. Two faults it
cannot see, both met on a real store (tests/faultproxy.py makes them on purpose):
- **a body cut short** after the headers: a GET's bytes are streamed to us after botocore has
  returned. `read_body` repeats the whole GET, with backoff, until the bytes match the length
  the server announced (BODY_ATTEMPTS tries);
- **a reply lost after the server applied a write**: botocore sends the same PUT again, and a
  conditional one then meets our own write (412). `ours_already` reads the object back: our own
  bytes there means the write happened (S3 PUTs are atomic), anything else is a real conflict.

What still fails after the retries is a TransientStorageError, whose message says what the
server answered (not "cannot reach" when it did): a scheduler may retry the whole job.
"""
from __future__ import annotations

import http.client
import random
import socket
import time

from pipeline.dataset.backends.base import StorageError

ATTEMPTS = 8             # botocore's standard retry mode: tries per request (first one included)
BODY_ATTEMPTS = 8        # whole GETs whose body broke off, before giving up
BACKOFF_SECONDS = 0.2    # doubled after each broken body, with jitter, at most MAX_BACKOFF
MAX_BACKOFF_SECONDS = 5.0
# Answers that say "try again": the server is there but busy or broken for the moment.
TRANSIENT_CODES = ("SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout",
                   "RequestTimeTooSkewed", "500", "502", "503", "504")


class TransientStorageError(StorageError):
    """The store kept failing in a way that may pass (busy, broken replies, unreachable) after
    every retry; the message says what it answered. Retrying the whole job may succeed."""


def broken_body_errors() -> tuple[type[BaseException], ...]:
    """What reading a response's body raises when the connection breaks mid-body."""
    from botocore.exceptions import (ConnectionClosedError, IncompleteReadError,
                                     ReadTimeoutError, ResponseStreamingError)
    from urllib3.exceptions import ProtocolError
    from urllib3.exceptions import ReadTimeoutError as Urllib3ReadTimeout

    return (IncompleteReadError, ResponseStreamingError, ReadTimeoutError, ConnectionClosedError,
            ProtocolError, Urllib3ReadTimeout, http.client.IncompleteRead, ConnectionError,
            socket.timeout)


def backoff(attempt: int) -> None:
    time.sleep(min(MAX_BACKOFF_SECONDS, BACKOFF_SECONDS * 2 ** attempt) * random.uniform(0.5, 1.0))


def read_body(url: str, get) -> tuple[bytes, dict]:
    """(bytes, response) of `get()` (a boto3 get_object call), the whole GET repeated until the
    body arrives in full. TransientStorageError after BODY_ATTEMPTS broken bodies."""
    broken = broken_body_errors()
    problem = ""
    for attempt in range(BODY_ATTEMPTS):
        response = get()
        expected = response.get("ContentLength")
        try:
            data = response["Body"].read()
        except broken as e:
            problem = f"the body broke off ({type(e).__name__})"
        else:
            if expected is None or len(data) == expected:
                return data, response
            problem = f"the body ended after {len(data)} of {expected} bytes"
        finally:
            response["Body"].close()
        if attempt + 1 < BODY_ATTEMPTS:
            backoff(attempt)
    raise TransientStorageError(f"read {url}: the server answered, but {problem}, "
                                f"{BODY_ATTEMPTS} times in a row")


def answered(error) -> str:
    """What a botocore ClientError says the server answered: `503 SlowDown after 8 tries`."""
    response = getattr(error, "response", {}) or {}
    code = response.get("Error", {}).get("Code", "")
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    tries = response.get("ResponseMetadata", {}).get("RetryAttempts", 0) + 1
    return f"{status or ''} {code or error}".strip() + (f" after {tries} tries" if tries > 1 else "")


def is_transient(code: str) -> bool:
    return code in TRANSIENT_CODES


def ours_already(read_versioned, url: str, data: bytes) -> str | None:
    """After a conditional write was refused: the object's token if it holds exactly `data`
    (our own write, applied before its reply was lost), else None (someone else's)."""
    try:
        current, token = read_versioned(url)
    except FileNotFoundError:
        return None
    return token if current == data else None
