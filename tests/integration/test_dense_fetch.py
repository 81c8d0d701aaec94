"""`auto` fetches Chroma's default model like chromadb would, and never leaves a broken cache.

Every download comes from a real HTTP server on 127.0.0.1 that serves a small model
archive laid out as chromadb's (``onnx/`` and the six files chromadb checks), whole,
truncated, slowly, with an error status or a wrong checksum. chromadb's download URL and
checksum are pointed at it and its cache at ``tmp_path``: the real network and the real
cache are never touched.
"""

from __future__ import annotations

import hashlib
import io
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from chromadb.api.types import DefaultEmbeddingFunction
from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2

from chroma_sparse_ef._dense import (
    CHROMA_DEFAULT_MODEL_FILES,
    DENSE_ENV_VAR,
    _fetch_model,
    _FetchFailed,
    default_dense_function,
)
from chroma_sparse_ef._hashing import HashingEmbeddingFunction


def model_archive(files: tuple[str, ...] = CHROMA_DEFAULT_MODEL_FILES) -> bytes:
    """A gzipped tar laid out like chromadb's onnx.tar.gz: ``onnx/<file>``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in files:
            data = f"contents of {name}\n".encode()
            if name == "model.onnx":
                # Incompressible, so the archive is big enough to be caught mid-download.
                data += np.random.default_rng(0).bytes(256 * 1024)
            info = tarfile.TarInfo(f"onnx/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@dataclass
class Behaviour:
    """What the loopback server does with the next GET."""

    body: bytes = b""
    status: int = 200
    #: Send only this many bytes of the body, then close (content-length stays full).
    cut_at: int | None = None
    #: Seconds between chunks of `chunk` bytes (a slow link).
    delay_s: float = 0.0
    chunk: int = 1024
    #: Send the headers, then nothing at all.
    stall: bool = False
    requests: list[str] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    behaviour: Behaviour

    def do_GET(self) -> None:
        b = self.server.behaviour  # type: ignore[attr-defined]
        b.requests.append(self.path)
        self.send_response(b.status)
        self.send_header("content-length", str(len(b.body)))
        self.end_headers()
        if b.stall:
            time.sleep(2)
            return
        body = b.body if b.cut_at is None else b.body[: b.cut_at]
        try:
            for i in range(0, len(body), b.chunk):
                self.wfile.write(body[i : i + b.chunk])
                self.wfile.flush()
                if b.delay_s:
                    time.sleep(b.delay_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up, as it should on a deadline
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Server:
    url: str
    behaviour: Behaviour


@pytest.fixture(autouse=True)
def _auto_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests exercise `auto`, whatever the environment pins for the rest of the suite."""
    monkeypatch.delenv(DENSE_ENV_VAR, raising=False)


@pytest.fixture
def server() -> Iterator[Server]:
    """A real HTTP server on 127.0.0.1 whose answer each test sets."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.behaviour = Behaviour()  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield Server(f"http://127.0.0.1:{httpd.server_port}/onnx.tar.gz", httpd.behaviour)  # type: ignore[attr-defined]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def cache(tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch) -> Path:
    """chromadb's model cache in tmp_path, its download URL on the loopback server."""
    root = tmp_path / "cache" / "all-MiniLM-L6-v2"
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "DOWNLOAD_PATH", root)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "MODEL_DOWNLOAD_URL", server.url)
    return root / "onnx"


def serve(server: Server, monkeypatch: pytest.MonkeyPatch, body: bytes, **kwargs: object) -> None:
    """Serve `body`, and make chromadb's expected checksum that of `body`."""
    server.behaviour.body = body
    for name, value in kwargs.items():
        setattr(server.behaviour, name, value)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_MODEL_SHA256", hashlib.sha256(body).hexdigest())


def assert_no_broken_cache(cache: Path) -> None:
    """Nothing chromadb would mistake for a model, and no temporary files left behind."""
    assert not cache.exists()
    leftovers = list(cache.parent.iterdir()) if cache.parent.exists() else []
    assert leftovers == []


def test_auto_fetches_the_model_into_chromadbs_cache(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not cached but fetchable: downloaded once, installed whole, and chromadb's default used."""
    serve(server, monkeypatch, model_archive())
    choice = default_dense_function(progress=False)
    assert choice.kind == "default"
    assert isinstance(choice.function, DefaultEmbeddingFunction)
    assert "downloaded its model to" in choice.reason
    assert str(cache) in choice.reason
    assert sorted(p.name for p in cache.iterdir()) == sorted(CHROMA_DEFAULT_MODEL_FILES)
    assert (cache / "vocab.txt").read_text().startswith("contents of vocab.txt")
    assert [p.name for p in cache.parent.iterdir()] == ["onnx"], "no temporary files left"
    assert len(server.behaviour.requests) == 1

    # chromadb now finds everything it checks and asks for nothing more.
    ONNXMiniLM_L6_V2()._download_model_if_not_exists()
    again = default_dense_function(progress=False)
    assert again.kind == "default"
    assert "cached" in again.reason
    assert len(server.behaviour.requests) == 1


def test_the_progress_bar_names_the_model_being_downloaded(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With progress on, stderr shows a bar that says what is downloading."""
    serve(server, monkeypatch, model_archive())
    assert default_dense_function().kind == "default"
    err = capsys.readouterr().err
    assert "downloading Chroma's default dense model (all-MiniLM-L6-v2)" in err


def test_a_truncated_download_falls_back_and_leaves_nothing(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection closes halfway: hashing, one line saying so, and no partial files."""
    body = model_archive()
    serve(server, monkeypatch, body, cut_at=len(body) // 2)
    choice = default_dense_function(progress=False)
    assert choice.kind == "hashing"
    assert isinstance(choice.function, HashingEmbeddingFunction)
    assert "could not fetch Chroma's default model" in choice.reason
    assert server.url in choice.reason
    assert "\n" not in str(choice)
    assert_no_broken_cache(cache)


def test_a_slow_download_gives_up_at_the_deadline(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A link that trickles bytes is abandoned once the deadline passes, cleanly."""
    serve(server, monkeypatch, model_archive(), chunk=64, delay_s=0.05)
    start = time.monotonic()
    choice = default_dense_function(deadline_s=0.5, progress=False)
    assert time.monotonic() - start < 5
    assert choice.kind == "hashing"
    assert "not done within 0.5 s" in choice.reason
    assert_no_broken_cache(cache)


def test_a_stalled_download_times_out(server: Server, cache: Path) -> None:
    """Headers, then silence: the stall timeout ends the wait, and nothing is installed."""
    server.behaviour.body = model_archive()
    server.behaviour.stall = True
    with pytest.raises(_FetchFailed, match="ReadTimeout"):
        _fetch_model(
            server.url,
            cache,
            sha256="0" * 64,
            archive_folder="onnx",
            deadline_s=60,
            progress=False,
            stall_timeout_s=0.3,
        )
    assert_no_broken_cache(cache)


def test_an_error_status_falls_back_naming_the_status(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 503 from the model host: hashing, and the status in the reason."""
    serve(server, monkeypatch, b"unavailable", status=503)
    choice = default_dense_function(progress=False)
    assert choice.kind == "hashing"
    assert "HTTP 503" in choice.reason
    assert_no_broken_cache(cache)


def test_a_download_with_the_wrong_checksum_is_not_installed(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A complete archive that is not the expected one is refused, as chromadb refuses it."""
    serve(server, monkeypatch, model_archive())
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "_MODEL_SHA256", "0" * 64)
    choice = default_dense_function(progress=False)
    assert choice.kind == "hashing"
    assert "SHA-256" in choice.reason
    assert_no_broken_cache(cache)


def test_an_archive_missing_a_file_is_not_installed(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every file chromadb checks must be in the archive, or nothing is installed."""
    serve(server, monkeypatch, model_archive(CHROMA_DEFAULT_MODEL_FILES[:-1]))
    choice = default_dense_function(progress=False)
    assert choice.kind == "hashing"
    assert "lacks vocab.txt" in choice.reason
    assert_no_broken_cache(cache)


def test_an_incomplete_cache_left_by_an_interrupted_extraction_is_replaced(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A half-extracted folder (what chromadb's in-place extraction can leave) is replaced whole."""
    cache.mkdir(parents=True)
    (cache / "config.json").write_text("half")
    serve(server, monkeypatch, model_archive())
    assert default_dense_function(progress=False).kind == "default"
    assert sorted(p.name for p in cache.iterdir()) == sorted(CHROMA_DEFAULT_MODEL_FILES)
    assert (cache / "config.json").read_text().startswith("contents of config.json")
    assert [p.name for p in cache.parent.iterdir()] == ["onnx"]


def test_hashing_preference_never_contacts_the_server(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CHROMA_SPARSE_EF_DENSE=hashing (what tests and CI set) makes no request at all."""
    serve(server, monkeypatch, model_archive())
    monkeypatch.setenv(DENSE_ENV_VAR, "hashing")
    assert default_dense_function().kind == "hashing"
    assert server.behaviour.requests == []
    assert not cache.parent.exists()


_CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import ONNXMiniLM_L6_V2
    from chroma_sparse_ef._dense import default_dense_function
    ONNXMiniLM_L6_V2.DOWNLOAD_PATH = Path(sys.argv[1])
    ONNXMiniLM_L6_V2.MODEL_DOWNLOAD_URL = sys.argv[2]
    ONNXMiniLM_L6_V2._MODEL_SHA256 = sys.argv[3]
    print(default_dense_function(progress=False).kind, flush=True)
    """
)


@pytest.mark.slow
def test_a_process_killed_mid_download_leaves_no_usable_looking_cache(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGKILL during the download: chromadb still sees no model, and the next run installs it."""
    body = model_archive()
    serve(server, monkeypatch, body, chunk=1024, delay_s=0.05)
    sha = hashlib.sha256(body).hexdigest()
    env = {**os.environ, DENSE_ENV_VAR: "auto"}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(cache.parent), server.url, sha],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            partial = list(cache.parent.glob(".chroma-sparse-ef-fetch-*/model.tar.gz"))
            if partial and partial[0].stat().st_size > 0:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the child never started downloading")
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert not cache.exists(), "a killed download must not leave an onnx folder"

    server.behaviour.delay_s = 0.0
    server.behaviour.chunk = 1 << 16
    choice = default_dense_function(progress=False)
    assert choice.kind == "default"
    assert sorted(p.name for p in cache.iterdir()) == sorted(CHROMA_DEFAULT_MODEL_FILES)


def test_a_cache_folder_that_cannot_be_written_falls_back_without_a_request(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chromadb's cache path is taken by a file: hashing, saying where it could not write."""
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the cache folder should be")
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "DOWNLOAD_PATH", blocked)
    monkeypatch.setattr(ONNXMiniLM_L6_V2, "MODEL_DOWNLOAD_URL", server.url)
    serve(server, monkeypatch, model_archive())
    choice = default_dense_function(progress=False)
    assert choice.kind == "hashing"
    assert f"cannot write to {blocked}" in choice.reason
    assert server.behaviour.requests == []
    assert blocked.read_text() == "a file where the cache folder should be"


def test_an_archive_with_a_path_outside_the_cache_is_refused(
    server: Server, cache: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A member named ``../escape`` is never written outside the temporary folder."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo("../../escape.txt")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    serve(server, monkeypatch, buffer.getvalue())
    choice = default_dense_function(progress=False)
    assert choice.kind == "hashing"
    assert "unreadable archive" in choice.reason or "unsafe entry" in choice.reason
    assert not list(tmp_path.rglob("escape.txt"))
    assert_no_broken_cache(cache)
