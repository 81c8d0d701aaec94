"""The dense leg of hybrid search: Chroma's default model when the machine can have it.

Chroma's default dense function (`DefaultEmbeddingFunction`, ONNX all-MiniLM-L6-v2) is
semantic: it finds paraphrases that share no word with the query, which is what a hybrid
search needs beside a lexical sparse leg. chromadb downloads its model on the first
``add``; `default_dense_function` does the same on ``auto``, before anything is written,
with a progress bar and a bounded wait, into chromadb's own cache (so chromadb finds it
there later). When the model cannot be had (no network, a slow or failing download, no
``onnxruntime``), it falls back to `HashingEmbeddingFunction`, an offline *lexical* dense
embedding, and says why in one line.

The download never leaves a broken cache: it goes to a temporary file next to the cache,
is checked against chromadb's SHA-256, extracted into a temporary folder, and moved into
place with one rename once every file chromadb needs is there. chromadb's own download
extracts in place, so an interrupted extraction would leave a folder that chromadb takes
for a complete model.

Override the choice with the ``CHROMA_SPARSE_EF_DENSE`` environment variable or the
`prefer` argument: ``auto`` (default), ``default`` (Chroma's model; chromadb downloads it
on first use if it is not cached) or ``hashing`` (never touches the network: what tests
and CI use).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from chromadb.api.types import DefaultEmbeddingFunction, Documents, EmbeddingFunction

from ._chroma_compat import default_onnx_model
from ._exceptions import ConfigurationError
from ._hashing import HashingEmbeddingFunction

__all__ = [
    "CHROMA_DEFAULT_MODEL_FILES",
    "DENSE_ENV_VAR",
    "DENSE_FETCH_CONNECT_TIMEOUT_S",
    "DENSE_FETCH_DEADLINE_S",
    "DENSE_FETCH_STALL_TIMEOUT_S",
    "DenseChoice",
    "DensePreference",
    "HashingEmbeddingFunction",
    "chroma_default_model_dir",
    "default_dense_function",
]

#: Environment variable that overrides `default_dense_function`'s choice.
DENSE_ENV_VAR = "CHROMA_SPARSE_EF_DENSE"
#: The files chromadb's ONNXMiniLM_L6_V2 checks before deciding to download
#: (`_download_model_if_not_exists` in chromadb 1.5.9, onnx_mini_lm_l6_v2.py).
CHROMA_DEFAULT_MODEL_FILES = (
    "config.json",
    "model.onnx",
    "special_tokens_map.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "vocab.txt",
)
#: Name of Chroma's default dense model, for messages.
CHROMA_DEFAULT_MODEL = "all-MiniLM-L6-v2"
#: Seconds to open the connection: a reachable host answers within a few seconds, and a
#: machine without network fails at once (name resolution), so this only bounds the
#: case of a host that swallows packets.
DENSE_FETCH_CONNECT_TIMEOUT_S = 10.0
#: Seconds without a byte before giving up on a stalled download.
DENSE_FETCH_STALL_TIMEOUT_S = 30.0
#: Seconds for the whole download. The archive is about 80 MB: 300 s accepts links down
#: to about 270 kB/s, beyond which a newcomer is better served by the offline fallback
#: now (and `CHROMA_SPARSE_EF_DENSE=default`, which lets chromadb take its time, later).
DENSE_FETCH_DEADLINE_S = 300.0
#: Longest exception text kept in the one-line reason.
_REASON_DETAIL_CHARS = 160

#: What `default_dense_function` accepts as `prefer`.
DensePreference = Literal["auto", "default", "hashing"]

_DEFAULT_NAME = f"{CHROMA_DEFAULT_MODEL} (Chroma's default)"
_HASHING_NAME = "offline hashing embedding (lexical, not semantic)"


@dataclass(frozen=True, slots=True)
class DenseChoice:
    """The dense function chosen for a run, and why.

    Attributes:
        function: The chromadb embedding function to use.
        name: What ran, for humans (``"all-MiniLM-L6-v2 (Chroma's default)"`` or
            ``"offline hashing embedding (lexical, not semantic)"``).
        reason: Why it was chosen, in one sentence, for the output of demos and notebooks.
        kind: ``"default"`` (Chroma's model) or ``"hashing"`` (`HashingEmbeddingFunction`).
    """

    function: EmbeddingFunction[Documents]
    name: str
    reason: str
    kind: Literal["default", "hashing"]

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


class _FetchFailed(Exception):
    """The model could not be fetched; the message is the one-line reason."""


def chroma_default_model_dir() -> Path:
    """Where chromadb keeps all-MiniLM-L6-v2's extracted files.

    Read from chromadb's `ONNXMiniLM_L6_V2.DOWNLOAD_PATH` at call time
    (`_chroma_compat.default_onnx_model`), so it follows chromadb (and tests that point it
    at a temporary folder).
    """
    return default_onnx_model().model_dir


def _missing_runtime() -> list[str]:
    # find_spec, not import: onnxruntime takes a second to import and is only needed
    # when the default model actually runs.
    return [m for m in ("onnxruntime", "tokenizers") if importlib.util.find_spec(m) is None]


def _missing_files(folder: Path) -> list[str]:
    return [f for f in CHROMA_DEFAULT_MODEL_FILES if not (folder / f).is_file()]


def default_dense_function(
    prefer: DensePreference | None = None,
    *,
    cache_dir: Path | None = None,
    deadline_s: float = DENSE_FETCH_DEADLINE_S,
    progress: bool = True,
) -> DenseChoice:
    """Choose the dense function: Chroma's default when it can be had, else hashing.

    Args:
        prefer: ``"auto"``: Chroma's default when its model is cached, or when it can be
            fetched (from chromadb's download URL, within `deadline_s`) and its runtime
            is installed; else `HashingEmbeddingFunction`. ``"default"``: Chroma's
            default regardless (if the model is not cached, *chromadb* downloads it on
            first use, unbounded). ``"hashing"``: `HashingEmbeddingFunction`, no network.
            None: the ``CHROMA_SPARSE_EF_DENSE`` environment variable, else ``"auto"``.
        cache_dir: The folder holding the extracted model files; default
            `chroma_default_model_dir()`, where chromadb looks.
        deadline_s: Longest wait for the download on ``auto``.
        progress: Draw a progress bar (tqdm, on stderr) while downloading.

    Returns:
        The function, a name for it and the reason it was chosen.

    Raises:
        ConfigurationError: `prefer` (or the environment variable) is not one of
            ``auto``, ``default``, ``hashing``.
    """
    if prefer is None:
        env = os.environ.get(DENSE_ENV_VAR, "").strip().lower()
        prefer_value: str = env or "auto"
        source = f"{DENSE_ENV_VAR}={env}" if env else ""
    else:
        prefer_value = prefer
        source = f"prefer={prefer!r}"
    if prefer_value not in ("auto", "default", "hashing"):
        where = f"{DENSE_ENV_VAR}" if prefer is None else "prefer"
        raise ConfigurationError(
            f"{where} must be 'auto', 'default' or 'hashing', got {prefer_value!r}"
        )
    folder = cache_dir if cache_dir is not None else chroma_default_model_dir()

    if prefer_value == "hashing":
        return _hashing(f"chosen by {source}")
    missing = _missing_files(folder)
    if prefer_value == "default":
        reason = f"chosen by {source}"
        if missing:
            reason += (
                f"; its model is not cached at {folder}, so chromadb will download it on first use"
            )
        return DenseChoice(DefaultEmbeddingFunction(), _DEFAULT_NAME, reason, "default")
    runtime = _missing_runtime()
    if runtime:
        return _hashing(
            f"Chroma's default model needs {', '.join(runtime)}, which is not installed"
        )
    if not missing:
        return DenseChoice(
            DefaultEmbeddingFunction(), _DEFAULT_NAME, f"its model is cached at {folder}", "default"
        )
    onnx = default_onnx_model()
    url = onnx.url
    start = time.monotonic()
    try:
        _fetch_model(
            url,
            folder,
            sha256=onnx.sha256,
            archive_folder=onnx.archive_folder,
            deadline_s=deadline_s,
            progress=progress,
        )
    except _FetchFailed as exc:
        return _hashing(
            f"could not fetch Chroma's default model ({CHROMA_DEFAULT_MODEL}) from {url}: "
            f"{exc}; set {DENSE_ENV_VAR}=hashing to skip trying"
        )
    return DenseChoice(
        DefaultEmbeddingFunction(),
        _DEFAULT_NAME,
        f"downloaded its model to {folder} in {time.monotonic() - start:.0f} s",
        "default",
    )


def _hashing(reason: str) -> DenseChoice:
    return DenseChoice(HashingEmbeddingFunction(), _HASHING_NAME, reason, "hashing")


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    if len(text) > _REASON_DETAIL_CHARS:
        text = text[: _REASON_DETAIL_CHARS - 1] + "…"
    return f"{type(exc).__name__}: {text}"


def _fetch_model(
    url: str,
    dest: Path,
    *,
    sha256: str,
    archive_folder: str,
    deadline_s: float,
    progress: bool,
    stall_timeout_s: float = DENSE_FETCH_STALL_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Download the model archive from `url` and install its files as `dest`, or nothing.

    Raises:
        _FetchFailed: Any failure (network, deadline, checksum, archive, file system);
            everything written so far has been removed, and `dest` never holds a
            partial model.
    """
    import httpx

    parent = dest.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        # Temporary names in the cache's own folder: the final rename stays on one
        # filesystem (atomic), and chromadb never looks at dot-prefixed names.
        workdir = Path(tempfile.mkdtemp(prefix=".chroma-sparse-ef-fetch-", dir=parent))
    except OSError as exc:
        raise _FetchFailed(f"cannot write to {parent}: {_one_line(exc)}") from exc
    try:
        archive = workdir / "model.tar.gz"
        timeout = httpx.Timeout(stall_timeout_s, connect=DENSE_FETCH_CONNECT_TIMEOUT_S)
        try:
            _download(url, archive, sha256, timeout, deadline_s, progress, clock)
        except (httpx.HTTPError, OSError) as exc:
            raise _FetchFailed(_one_line(exc)) from exc
        extracted = workdir / "extracted"
        try:
            with tarfile.open(archive, mode="r:gz") as tar:
                _extract(tar, extracted)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise _FetchFailed(f"unreadable archive: {_one_line(exc)}") from exc
        model = extracted / archive_folder
        missing = _missing_files(model)
        if missing:
            raise _FetchFailed(f"the archive lacks {', '.join(missing)}")
        try:
            _install(model, dest, workdir)
        except OSError as exc:
            raise _FetchFailed(f"cannot install into {dest}: {_one_line(exc)}") from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _download(
    url: str,
    archive: Path,
    sha256: str,
    timeout: Any,
    deadline_s: float,
    progress: bool,
    clock: Callable[[], float],
) -> None:
    import httpx

    start = clock()
    digest = hashlib.sha256()
    with (
        httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as resp,
        archive.open("wb") as out,
    ):
        if resp.status_code != 200:
            raise _FetchFailed(f"HTTP {resp.status_code}")
        total = int(resp.headers.get("content-length") or 0) or None
        with _bar(progress, total) as bar:
            # No chunk size: each network read is yielded as it comes, so the deadline is
            # checked even while a slow server trickles a few bytes at a time.
            for chunk in resp.iter_bytes():
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
                if clock() - start > deadline_s:
                    raise _FetchFailed(f"not done within {deadline_s:g} s")
    if digest.hexdigest() != sha256:
        raise _FetchFailed("the download does not match chromadb's SHA-256 for the model")


@contextlib.contextmanager
def _bar(enabled: bool, total: int | None) -> Any:
    if not enabled:
        from ._progress import progress_bar

        with progress_bar(False, 0, "") as bar:
            yield bar
        return
    from tqdm import tqdm

    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=f"downloading Chroma's default dense model ({CHROMA_DEFAULT_MODEL})",
        file=sys.stderr,
    ) as bar:
        yield bar


def _extract(tar: tarfile.TarFile, into: Path) -> None:
    # The "data" filter refuses absolute paths, links out of the folder and devices; it
    # exists from Python 3.12 and in security releases of 3.10 and 3.11.
    if hasattr(tarfile, "data_filter"):
        tar.extractall(into, filter="data")
        return
    root = into.resolve()
    for member in tar.getmembers():
        target = (into / member.name).resolve()
        if not (member.isfile() or member.isdir()) or root not in (target, *target.parents):
            raise _FetchFailed(f"the archive holds an unsafe entry: {member.name!r}")
    tar.extractall(into)


def _install(model: Path, dest: Path, workdir: Path) -> None:
    """Move the complete `model` folder to `dest` with one rename.

    A `dest` that exists is incomplete (else nothing would have been fetched), e.g. left
    by an interrupted extraction; it is moved aside first. If another process installed
    a complete model meanwhile, that one is kept.
    """
    if dest.exists():
        if not _missing_files(dest):
            return
        os.replace(dest, workdir / "stale")
    try:
        os.replace(model, dest)
    except OSError:
        if dest.is_dir() and not _missing_files(dest):
            return  # another process won the race with a complete model
        raise
