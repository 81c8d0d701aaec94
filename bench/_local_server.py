"""Start `chroma-sparse-ef serve` in its own process for a benchmark (no shared GIL)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

_LAUNCH = (
    "import sys; from chroma_sparse_ef.cli import main; sys.argv[0] = 'chroma-sparse-ef'; main()"
)


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def server_process(*args: str, startup_timeout: float = 60.0) -> Iterator[str]:
    """Run the local server with extra CLI `args`; yield its base URL; stop it after."""
    port = free_port()
    cmd = [
        sys.executable,
        "-c",
        _LAUNCH,
        "serve",
        "--port",
        str(port),
        "--log-level",
        "warning",
        *args,
    ]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            try:
                if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the local server did not start (exit code {proc.poll()})")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
