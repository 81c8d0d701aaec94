"""A loopback HTTP server that misbehaves on purpose, for the function's security tests.

Raw sockets, one thread per connection, so it can do what no framework allows: trickle
headers or a body one byte at a time, announce a huge body, or answer like the service
while recording the token each request carried.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

#: Seconds between trickled bytes (issue 9's attack: one byte every 0.2 s).
TRICKLE_INTERVAL = 0.2


@dataclass
class Hostile:
    """What the server does with each request, and what it saw.

    Attributes:
        mode: ``"trickle_body"``, ``"trickle_headers"``, ``"status"`` (answer `status`),
            ``"huge"`` (a 2xx body of `huge_bytes`, sent as fast as the client reads) or
            ``"record"`` (answer like the service), ``"gzip_bomb"`` (a gzip body that
            inflates to `huge_bytes`), ``"gzip"`` / ``"deflate"`` / ``"raw_deflate"``
            (answer like the service, compressed so), or ``"bad_or_busy"`` (400 for a
            request whose texts include "bad", else 503 with ``retry-after: 30``), or
            ``"redirect"`` (a 307 to `redirect_to`).
        tokens: The ``x-chroma-token`` of every request, in order.
        bytes_sent: Body bytes written (for "huge").
    """

    mode: str
    status: int = 500
    huge_bytes: int = 40_000_000
    tokens: list[str] = field(default_factory=list)
    bytes_sent: int = 0
    url: str = ""
    #: For mode ``"redirect"``: where a 307 sends the client.
    redirect_to: str = ""


def _read_request(conn: socket.socket) -> tuple[dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise ConnectionError("client went away")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    headers = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return headers, body


def _serve_one(conn: socket.socket, spec: Hostile) -> None:
    with conn:
        try:
            headers, body = _read_request(conn)
            spec.tokens.append(headers.get("x-chroma-token", ""))
            if spec.mode == "trickle_body":
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                for _ in range(100000):
                    conn.sendall(b" ")
                    time.sleep(TRICKLE_INTERVAL)
            elif spec.mode == "trickle_headers":
                conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                for _ in range(100000):
                    conn.sendall(b"a")
                    time.sleep(TRICKLE_INTERVAL)
            elif spec.mode == "status":
                payload = json.dumps({"error": "hostile says no"}).encode()
                conn.sendall(
                    f"HTTP/1.1 {spec.status} Nope\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                    + payload
                )
            elif spec.mode == "huge":
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + f"Content-Length: {spec.huge_bytes}\r\n\r\n".encode()
                )
                conn.sendall(b'{"embeddings": [{"indices": [')
                piece = b"1," * 32768
                while spec.bytes_sent < spec.huge_bytes:
                    conn.sendall(piece)
                    spec.bytes_sent += len(piece)
            elif spec.mode == "gzip_bomb":
                bomb = _gzip_bomb(spec.huge_bytes)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Encoding: gzip\r\n" + f"Content-Length: {len(bomb)}\r\n\r\n".encode()
                )
                for start in range(0, len(bomb), 65536):
                    conn.sendall(bomb[start : start + 65536])
                    spec.bytes_sent += len(bomb[start : start + 65536])
            elif spec.mode == "redirect":
                conn.sendall(
                    b"HTTP/1.1 307 Temporary Redirect\r\n"
                    + f"Location: {spec.redirect_to}\r\n".encode()
                    + b"Content-Length: 0\r\nConnection: close\r\n\r\n"
                )
            elif spec.mode == "bad_or_busy":
                texts = json.loads(body)["texts"]
                status, extra = (400, "") if "bad" in texts else (503, "Retry-After: 30\r\n")
                payload = json.dumps({"error": "no"}).encode()
                conn.sendall(
                    f"HTTP/1.1 {status} No\r\nContent-Type: application/json\r\n{extra}"
                    f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
                    + payload
                )
            else:
                texts = json.loads(body)["texts"]
                payload = json.dumps(
                    {
                        "embeddings": [{"indices": [1], "values": [1.0]} for _ in texts],
                        "num_tokens": len(texts),
                    }
                ).encode()
                encoding = b""
                if spec.mode in ("gzip", "deflate", "raw_deflate"):
                    wbits = {"gzip": 31, "deflate": 15, "raw_deflate": -15}[spec.mode]
                    packer = zlib.compressobj(6, zlib.DEFLATED, wbits)
                    payload = packer.compress(payload) + packer.flush()
                    name = spec.mode.replace("raw_", "")
                    encoding = f"Content-Encoding: {name}\r\n".encode()
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + encoding
                    + f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
        except OSError:
            pass  # the client hung up, which is what the tests want it to do


def _gzip_bomb(size: int) -> bytes:
    """A gzip'd JSON answer that inflates to about `size` bytes (zeros in a string)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(b'{"embeddings": [{"indices": [1], "values": [1.0], "pad": "')]
    block = b"0" * 1_000_000
    for _ in range(size // len(block)):
        parts.append(packer.compress(block))
    parts.append(packer.compress(b'"}], "num_tokens": 1}'))
    parts.append(packer.flush())
    return b"".join(parts)


@contextlib.contextmanager
def hostile_server(mode: str, host: str = "127.0.0.1", **options: object) -> Iterator[Hostile]:
    """Run a `Hostile` server on `host` (any 127.0.0.0/8 address) until the block ends."""
    spec = Hostile(mode, **options)  # type: ignore[arg-type]
    listener = socket.socket()
    listener.bind((host, 0))
    listener.listen(64)
    listener.settimeout(0.1)
    spec.url = f"http://{host}:{listener.getsockname()[1]}"
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=_serve_one, args=(conn, spec), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield spec
    finally:
        stop.set()
        thread.join(2)
        listener.close()


def closed_port_url(host: str = "127.0.0.1") -> str:
    """A URL on which nothing listens (connection refused)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        port = sock.getsockname()[1]
    return f"http://{host}:{port}"
