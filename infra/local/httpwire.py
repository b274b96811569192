"""HTTP/1.1 messages read off a socket and copied on as they arrive, framing and all (for
infra/local/faultproxy.py, which must pass every request boto3 makes through unchanged)."""
from __future__ import annotations

BLOCK = 256 * 1024


class Message:
    """The head of one HTTP request or response, as read off the wire."""

    def __init__(self, start: bytes, headers: list[tuple[str, str]], raw: bytes):
        self.start, self.headers, self.raw = start, headers, raw

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)

    @property
    def closes(self) -> bool:
        return (self.header("connection") or "").lower() == "close"


def read_head(reader) -> Message | None:
    """The start line and headers, or None at a clean end of the connection."""
    lines = []
    while True:
        line = reader.readline(65536)
        if not line:
            if lines:
                raise ConnectionError("connection closed inside a message head")
            return None
        if line in (b"\r\n", b"\n"):
            if lines:
                break
            continue                                   # stray empty line between messages
        lines.append(line)
    headers = [tuple(part.strip() for part in line.decode("latin-1").split(":", 1)) for line in lines[1:]]
    return Message(lines[0], headers, b"".join(lines) + b"\r\n")


def copy_body(reader, send, head: Message, has_body: bool = True, limit: int | None = None) -> None:
    """Copy one message body from `reader` to `send` as framed by its head; with `limit`, stop
    after that many bytes (the caller closes the connection). A request without a length has no
    body; a response without one ends when the server closes the connection."""
    if not has_body:
        return
    if (head.header("transfer-encoding") or "").lower().endswith("chunked"):
        return copy_chunked(reader, send)
    length = head.header("content-length")
    if length is None and not head.start.startswith(b"HTTP/"):
        return
    remaining = int(length) if length is not None else None       # None: until the peer closes
    if limit is not None and remaining is not None:
        remaining = min(remaining, limit)
    while remaining is None or remaining > 0:
        block = reader.read1(BLOCK if remaining is None else min(BLOCK, remaining))
        if not block:
            if remaining is None:
                return
            raise ConnectionError("connection closed inside a message body")
        send(block)
        if remaining is not None:
            remaining -= len(block)


def copy_chunked(reader, send) -> None:
    """Chunks verbatim (sizes, extensions, trailers), up to and including the last one."""
    while True:
        size_line = reader.readline(65536)
        send(size_line)
        size = int(size_line.split(b";")[0].strip() or b"0", 16)
        if size == 0:
            while True:                                 # trailers, then the empty line
                line = reader.readline(65536)
                send(line)
                if line in (b"\r\n", b"\n", b""):
                    return
        remaining = size + 2                            # the data and its CRLF
        while remaining:
            block = reader.read(min(BLOCK, remaining))
            if not block:
                raise ConnectionError("connection closed inside a chunk")
            send(block)
            remaining -= len(block)
