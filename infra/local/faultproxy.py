"""A test utility: a fault-injecting HTTP proxy in front of an S3 server, producing on purpose the
faults a real object store produces every day, so tests can show the project survives them.

    python -m infra.local.faultproxy --upstream http://127.0.0.1:9000 [--slowdown 0.02]
        [--internal 0.02] [--cut 0.02] [--lost 0.02] [--delay 0.02] [--delay-seconds 2] [--seed 0]

It listens on a free loopback port; point clients at it instead of the server (their requests are
signed for the proxy's address, which is forwarded unchanged as the Host header, so signatures
still check). For each request a seeded random draw picks at most one fault:
- slowdown: 503 SlowDown, internal: 500 InternalError (S3 XML error bodies, as botocore expects
  before it retries), the request never reaching the server;
- cut: the server's response headers with its full Content-Length, then half the body, then the
  connection closes (botocore retries only until the headers arrive: the reader sees it);
- lost: a write (PUT, POST, DELETE) is forwarded and applied, then the client's connection is reset
  instead of the reply;
- delay: the request waits `delay_seconds` before it is forwarded.
A cut needs a body and a lost reply a write: other requests drawn for them pass through uncounted.
Bodies are streamed in both directions (Content-Length, chunked, aws-chunked inside either;
Expect: 100-continue is relayed), so every request boto3 makes goes through. Standard library
only, one thread per client connection.
"""
from __future__ import annotations

import argparse
import random
import select
import socket
import struct
import sys
import threading
import time
import urllib.parse

from infra.local.httpwire import Message, copy_body, read_head
from infra.local.processes import free_port

KINDS = ("slowdown", "internal", "cut", "lost", "delay")
ERRORS = {"slowdown": (503, "Service Unavailable", "SlowDown", "Please reduce your request rate."),
          "internal": (500, "Internal Server Error", "InternalError",
                       "We encountered an internal error. Please try again.")}
WRITES = {"PUT", "POST", "DELETE"}


def error_response(kind: str, method: str, request_id: int) -> bytes:
    status, reason, code, message = ERRORS[kind]
    body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}'
            f"</Message><RequestId>faultproxy-{request_id}</RequestId></Error>").encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nx-amz-request-id: faultproxy-{request_id}\r\n\r\n").encode()
    return head if method == "HEAD" else head + body


class Upstream:
    """One client connection's keep-alive connection to the server, opened again when the server
    has closed it while idle."""

    def __init__(self, address: tuple[str, int]):
        self.address, self.sock, self.reader = address, None, None

    def connection(self):
        if self.sock is not None:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if readable and self.sock.recv(1, socket.MSG_PEEK) == b"":
                self.close()
        if self.sock is None:
            self.sock = socket.create_connection(self.address)
            self.reader = self.sock.makefile("rb")
        return self.sock, self.reader

    def close(self) -> None:
        if self.sock is not None:
            self.reader.close()
            self.sock.close()
            self.sock = self.reader = None


class FaultProxy:
    """The proxy: `FaultProxy(upstream, cut=0.1, seed=3).start()`, then `endpoint_url`, `injected`
    (faults per kind so far), `requests`, `set_rates(...)`, `stop()`; a context manager too.
    `target`: only requests whose path holds this text may get a fault (e.g. "manifest.json");
    `limit`: at most this many faults in all (a fault counts once injected)."""

    def __init__(self, upstream: str, seed: int = 0, delay_seconds: float = 2.0, port: int = 0,
                 target: str | None = None, limit: int | None = None, **rates: float):
        url = urllib.parse.urlsplit(upstream)
        if url.scheme != "http" or not url.hostname:
            raise ValueError(f"upstream {upstream!r}: give an http://host:port URL")
        self.upstream = (url.hostname, url.port or 80)
        self.delay_seconds = delay_seconds
        self.port = port or free_port()
        self.random, self.lock = random.Random(seed), threading.Lock()
        self.injected, self.requests = dict.fromkeys(KINDS, 0), 0
        self.target, self.limit = target, limit     # only requests for paths holding `target`; at most `limit` faults
        self.set_rates(**rates)
        self.listener: socket.socket | None = None
        self.connections: set[socket.socket] = set()

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_rates(self, **rates: float) -> None:
        """The fraction of requests that get each kind of fault (the rest pass through)."""
        unknown = set(rates) - set(KINDS)
        if unknown or any(not 0 <= r <= 1 for r in rates.values()) or sum(rates.values()) > 1:
            raise ValueError(f"fault rates {rates}: kinds are {', '.join(KINDS)}, each 0..1, sum <= 1")
        self.rates = {kind: rates.get(kind, 0.0) for kind in KINDS}

    def start(self) -> "FaultProxy":
        self.listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True, name="faultproxy").start()
        return self

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for sock in list(self.connections):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def _accept(self) -> None:
        while self.listener is not None:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _draw(self, path: bytes = b"") -> tuple[int, str | None]:
        with self.lock:
            self.requests += 1
            if self.target is not None and self.target.encode() not in path:
                return self.requests, None
            if self.limit is not None and sum(self.injected.values()) >= self.limit:
                return self.requests, None
            draw, edge = self.random.random(), 0.0
            for kind in KINDS:
                edge += self.rates[kind]
                if draw < edge:
                    return self.requests, kind
            return self.requests, None

    def _count(self, kind: str) -> None:
        with self.lock:
            self.injected[kind] += 1

    def _serve(self, client: socket.socket) -> None:
        self.connections.add(client)
        reader, upstream = client.makefile("rb"), Upstream(self.upstream)
        try:
            while self._exchange(client, reader, upstream):
                pass
        except (OSError, ValueError):
            pass                                   # a peer went away: so does this connection
        finally:
            self.connections.discard(client)
            reader.close()
            client.close()
            upstream.close()

    def _exchange(self, client, reader, upstream: Upstream) -> bool:
        """One request and its response (or its fault); False when the connection must close."""
        head = read_head(reader)
        if head is None:
            return False
        method, path = head.start.split(b" ", 2)[:2]
        method = method.decode("latin-1")
        number, kind = self._draw(path)
        expects = "100-continue" in (head.header("expect") or "").lower()
        if kind in ERRORS:
            if not expects:
                copy_body(reader, lambda _: None, head)          # the request never reaches S3
            client.sendall(error_response(kind, method, number))
            self._count(kind)
            return not expects and not head.closes
        if kind == "delay":
            self._count(kind)
            time.sleep(self.delay_seconds)
        sock, up_reader = upstream.connection()
        sock.sendall(head.raw)
        response = self._request_body(head, expects, reader, client, sock, up_reader)
        if response is None:
            return False
        return self._response(kind, method, head, response, client, up_reader)

    @staticmethod
    def _request_body(head, expects, reader, client, upstream, up_reader) -> Message | None:
        """Send the body upstream (after the server's 100 Continue, relayed, if one was asked
        for); the server's final response head."""
        if expects:
            interim = read_head(up_reader)
            if interim is None:
                return None
            if interim.start.split()[1] != b"100":
                return interim                            # refused before the body was sent
            client.sendall(interim.raw)
        copy_body(reader, upstream.sendall, head)
        response = read_head(up_reader)
        while response is not None and response.start.split()[1] == b"100":
            response = read_head(up_reader)              # an unasked-for 100 Continue
        return response

    def _response(self, kind, method, head, response, client, up_reader) -> bool:
        status = int(response.start.split()[1])
        has_body = method != "HEAD" and not (100 <= status < 200 or status in (204, 304))
        length = int(response.header("content-length") or 0)
        if kind == "lost" and method in WRITES:
            copy_body(up_reader, lambda _: None, response, has_body)   # applied and answered...
            self._count(kind)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False                                               # ...and the reply lost
        client.sendall(response.raw)
        if kind == "cut" and has_body and length >= 2:
            copy_body(up_reader, client.sendall, response, limit=length // 2)
            self._count(kind)
            return False
        copy_body(up_reader, client.sendall, response, has_body)
        framed = not has_body or response.header("content-length") is not None or \
            (response.header("transfer-encoding") or "").lower().endswith("chunked")
        return framed and not head.closes and not response.closes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.local.faultproxy", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="the S3 server, http://host:port")
    parser.add_argument("--port", type=int, default=0, help="where to listen (default: a free port)")
    for kind in KINDS:
        parser.add_argument(f"--{kind}", type=float, default=0.0, help=f"fraction of requests: {kind}")
    parser.add_argument("--delay-seconds", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        proxy = FaultProxy(args.upstream, seed=args.seed, delay_seconds=args.delay_seconds, port=args.port,
                           **{kind: getattr(args, kind) for kind in KINDS}).start()
    except (ValueError, OSError) as e:
        raise SystemExit(f"faultproxy: error: {e}") from None
    print(f"fault proxy on {proxy.endpoint_url} -> {args.upstream}; point AWS_ENDPOINT_URL_S3 at it. "
          "Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    proxy.stop()
    print(f"faultproxy: {proxy.requests} requests, injected {proxy.injected}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
