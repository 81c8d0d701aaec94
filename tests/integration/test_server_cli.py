"""`chroma-sparse-ef serve` as a real process: starts, serves, logs honestly, stops on SIGINT."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

SECRET = "sk-planted-secret-subprocess-99"
#: Generous: a cold interpreter imports chromadb and FastAPI (~2 s) before serving.
STARTUP_TIMEOUT = 30.0
_SERVING = re.compile(r"serving (http://\S+)/embed_sparse")


@dataclass
class ServeProcess:
    """A running `serve` process and everything it has printed so far."""

    proc: subprocess.Popen[str]
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    output: list[str] = field(default_factory=list)

    def wait_for(self, pattern: re.Pattern[str]) -> re.Match[str]:
        """Read output until a line matches, or fail after STARTUP_TIMEOUT."""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.output.append(line)
            if match := pattern.search(line):
                return match
        pytest.fail(f"serve never printed {pattern.pattern!r}; output:\n{''.join(self.output)}")

    def stop(self) -> str:
        """SIGINT (Ctrl-C), wait, and return all output."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)


def _start(*args: str, env: dict[str, str] | None = None) -> ServeProcess:
    proc = subprocess.Popen(
        [sys.executable, "-m", "chroma_sparse_ef.cli", "serve", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    served = ServeProcess(proc)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            served.lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return served


@pytest.fixture
def keyed_server() -> Iterator[tuple[ServeProcess, str]]:
    """`serve --port 0` with the key in the environment; yields it and its base URL."""
    served = _start("--port", "0", env={"CHROMA_SPARSE_EF_SERVER_API_KEY": SECRET})
    try:
        url = served.wait_for(_SERVING).group(1)
        yield served, url
    finally:
        served.stop()


def test_serve_accepts_a_request_the_moment_it_prints_its_url() -> None:
    """The `serving` line is printed only once the socket accepts connections: the
    first request, made at once and never retried, is served (three fresh processes)."""
    for _ in range(3):
        served = _start("--port", "0", "--log-level", "warning")
        try:
            url = served.wait_for(_SERVING).group(1)
            with httpx.Client(transport=httpx.HTTPTransport(retries=0)) as client:
                assert client.get(f"{url}/healthz").status_code == 200
        finally:
            served.stop()


def test_serve_process_authenticates_with_the_env_key(
    keyed_server: tuple[ServeProcess, str],
) -> None:
    """The key from CHROMA_SPARSE_EF_SERVER_API_KEY is enforced: 401 without, 200 with."""
    _, url = keyed_server
    headers = {"x-chroma-embedding-model": "BAAI/bge-m3"}
    body = {"texts": ["a real process"], "task": "", "target": ""}
    wrong = httpx.post(f"{url}/embed_sparse", headers={**headers, "x-chroma-token": "x"}, json=body)
    right = httpx.post(
        f"{url}/embed_sparse", headers={**headers, "x-chroma-token": SECRET}, json=body
    )
    assert (wrong.status_code, right.status_code) == (401, 200)


def test_serve_process_logs_the_backend_honestly_and_never_the_key(
    keyed_server: tuple[ServeProcess, str],
) -> None:
    """Startup says BM25 is not SPLADE; the whole log, access lines included, lacks the key."""
    served, url = keyed_server
    httpx.post(
        f"{url}/embed_sparse",
        headers={"x-chroma-embedding-model": "BAAI/bge-m3", "x-chroma-token": SECRET},
        json={"texts": ["x"], "task": "", "target": ""},
    )
    output = served.stop()
    # uvicorn re-raises the SIGINT after a clean shutdown: 130, as for any Ctrl-C.
    assert served.proc.returncode in (0, 130, -signal.SIGINT)
    assert "Application shutdown complete" in output
    assert "NOT SPLADE" in output
    assert "API key required" in output
    assert "POST /embed_sparse" in output
    assert SECRET not in output


def test_serve_on_a_busy_port_fails_with_one_line() -> None:
    """A taken port: exit status 1 and a single `chroma-sparse-ef: error:` line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "chroma_sparse_ef.cli",
                "serve",
                "--port",
                str(taken.getsockname()[1]),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("chroma-sparse-ef: error: cannot listen on 127.0.0.1:")


def test_serve_warns_when_exposed_without_a_key() -> None:
    """Bound to 0.0.0.0 with no key, the server warns that anyone can use it."""
    served = _start("--host", "0.0.0.0", "--port", "0", "--log-level", "warning")
    try:
        served.wait_for(re.compile("not a loopback address"))
    finally:
        served.stop()
