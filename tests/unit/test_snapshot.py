"""Sparse index snapshots: exact round trips, and None for every kind of damage or mismatch."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from chroma_sparse_ef.hybrid import _index, _segments, _snapshot
from chroma_sparse_ef.hybrid._index import SparseIndex
from chroma_sparse_ef.hybrid._snapshot import (
    layout_digest,
    load_snapshot,
    snapshot_path,
    write_snapshot,
)

CID = "7d0c5a4e-2f57-4c5e-9a57-0c3f1f0b6a11"
OTHER = "0b1f6a11-9a57-4c5e-2f57-7d0c5a4e0c3f"
LAYOUT = layout_digest({"sparse_key": "sparse_embedding", "bm25": True})


@pytest.fixture(autouse=True)
def small_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 8)
    monkeypatch.setattr(_index, "_COMPACT_MIN_SLOTS", 10**9)


def sample_index(seed: int = 0, n: int = 300) -> SparseIndex:
    """Several segments, tombstones, and ids that are not ASCII."""
    rng = np.random.default_rng(seed)
    ids = [f"doc-{i}" if i % 7 else f"dóc-{i}-ß" for i in range(n)]
    idx = [np.unique(rng.integers(0, 60, size=int(rng.integers(1, 15)))) for _ in ids]
    val = [rng.random(a.shape[0]).astype(np.float32) + 0.01 for a in idx]
    index = SparseIndex.build(ids, idx, val)
    index.delete(ids[::11])
    for k in range(20):
        index.upsert([ids[k * 3]], [[1, 5, 9 + k]], [[0.5, 1.5, 2.0]])
    assert index.segment_count > 1
    assert index.dead_count > 0
    return index


def results(index: SparseIndex, seed: int = 9) -> list[list[tuple[str, float]]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(15):
        q = np.unique(rng.integers(0, 60, size=5))
        w = rng.random(q.shape[0]) + 0.1
        out.append(index.search(q, w, 20))
        out.append(index.search(q, w, 5, idf_records=len(index) + 3))
    return out


def write(path: Path, index: SparseIndex, **kw: object) -> None:
    args: dict[str, object] = {
        "collection_id": CID,
        "watermark": 42,
        "layout": LAYOUT,
        "extras": {"fingerprints": np.arange(10, dtype=np.uint64)},
        "blobs": {"ids_order": b"\x00\x01binary"},
    }
    args.update(kw)
    write_snapshot(path, index, **args)  # type: ignore[arg-type]


def load(path: Path, **kw: object) -> _snapshot.LoadedSnapshot | None:
    args: dict[str, object] = {"collection_id": CID, "layout": LAYOUT}
    args.update(kw)
    return load_snapshot(path, **args)  # type: ignore[arg-type]


def test_round_trip_gives_the_same_index_and_caller_data(tmp_path: Path) -> None:
    """A loaded snapshot answers every search bit for bit as the index written, and carries
    the watermark, extras and blobs."""
    index = sample_index()
    path = tmp_path / "snap"
    write(path, index)
    loaded = load(path)
    assert loaded is not None
    assert loaded.watermark == 42
    assert sorted(loaded.index.ids()) == sorted(index.ids())
    assert loaded.index.dead_count == index.dead_count
    assert results(loaded.index) == results(index)
    np.testing.assert_array_equal(loaded.extras["fingerprints"], np.arange(10, dtype=np.uint64))
    assert loaded.blobs == {"ids_order": b"\x00\x01binary"}


def test_loaded_index_takes_writes_like_the_original(tmp_path: Path) -> None:
    """Upserts and deletes after a load give the same answers as on the original."""
    index = sample_index()
    path = tmp_path / "snap"
    write(path, index, watermark="seq-17")
    loaded = load(path, watermark="seq-17")
    assert loaded is not None
    for target in (index, loaded.index):
        target.upsert(["new", "doc-1"], [[1, 2], [5]], [[3.0, 1.0], [9.0]])
        target.delete(["doc-2", "dóc-14-ß"])
    assert results(loaded.index) == results(index)


def test_empty_index_round_trips(tmp_path: Path) -> None:
    """An empty index is a valid snapshot too."""
    path = tmp_path / "snap"
    write(path, SparseIndex(), extras={}, blobs={})
    loaded = load(path)
    assert loaded is not None
    assert len(loaded.index) == 0


@pytest.mark.parametrize(
    "kw",
    [
        {"collection_id": OTHER},
        {"layout": layout_digest({"sparse_key": "other"})},
        {"watermark": 43},
        {"watermark": "42"},
    ],
)
def test_mismatched_header_is_ignored(tmp_path: Path, kw: dict[str, object]) -> None:
    """Another collection, layout or watermark than expected gives None."""
    path = tmp_path / "snap"
    write(path, sample_index())
    assert load(path) is not None
    assert load(path, **kw) is None


def test_another_format_version_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot written by another format version gives None."""
    path = tmp_path / "snap"
    with monkeypatch.context() as m:
        m.setattr(_snapshot, "FORMAT_VERSION", _snapshot.FORMAT_VERSION + 1)
        write(path, sample_index())
    assert load(path) is None


def test_another_collections_snapshot_swapped_in_is_ignored(tmp_path: Path) -> None:
    """Copying collection B's snapshot over A's path gives None for A."""
    a, b = tmp_path / "a", tmp_path / "b"
    write(a, sample_index(1))
    write(b, sample_index(2), collection_id=OTHER)
    b.replace(a)
    assert load(a) is None
    assert load(a, collection_id=OTHER) is not None


def test_every_flipped_byte_is_detected(tmp_path: Path) -> None:
    """A byte flipped anywhere (magic, header, digest, padding, any array) gives None."""
    path = tmp_path / "snap"
    write(path, sample_index())
    good = path.read_bytes()
    size = len(good)
    positions = sorted(set(range(256)) | set(range(0, size, max(1, size // 400))) | {size - 1})
    for p in positions:
        bad = bytearray(good)
        bad[p] ^= 0x5A
        path.write_bytes(bytes(bad))
        assert load(path) is None, p
    path.write_bytes(good)
    assert load(path) is not None


def test_appended_bytes_are_detected(tmp_path: Path) -> None:
    """A file longer than written gives None."""
    path = tmp_path / "snap"
    write(path, sample_index())
    with open(path, "ab") as f:
        f.write(b"\0")
    assert load(path) is None


@pytest.mark.parametrize("keep", [0, 1, 8, 15, 16, 100, -1, -64, -4096])
def test_truncated_file_is_ignored(tmp_path: Path, keep: int) -> None:
    """Any truncation gives None."""
    path = tmp_path / "snap"
    write(path, sample_index())
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    assert load(path) is None


def test_missing_or_garbage_file_is_ignored(tmp_path: Path) -> None:
    """No file, a folder, or random bytes give None."""
    assert load(tmp_path / "absent") is None
    assert load(tmp_path) is None
    junk = tmp_path / "junk"
    junk.write_bytes(os.urandom(5000))
    assert load(junk) is None
    junk.write_bytes(_snapshot._MAGIC + (2**62).to_bytes(8, "little"))
    assert load(junk) is None


def test_failed_write_keeps_the_old_snapshot_and_leaves_no_temp_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If writing fails midway, the previous snapshot still loads and nothing is left over."""
    path = tmp_path / "snap"
    write(path, sample_index(1), watermark=1)

    def broken_fsync(fd: int) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(_snapshot.os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="disk full"):
        write(path, sample_index(2), watermark=2)
    monkeypatch.undo()
    loaded = load(path)
    assert loaded is not None
    assert loaded.watermark == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["snap"]


def test_invalid_names_and_dtypes_are_refused_before_writing(tmp_path: Path) -> None:
    """A bad extra name or an object array is a ValueError and no file appears."""
    path = tmp_path / "snap"
    with pytest.raises(ValueError, match="name"):
        write(path, sample_index(), extras={"../x": np.zeros(2)})
    with pytest.raises(ValueError, match="dtype"):
        write(path, sample_index(), extras={"x": np.array(["a"], dtype=object)})
    assert not path.exists()


def test_snapshot_path_lives_beside_the_data_and_hashes_odd_ids(tmp_path: Path) -> None:
    """The file sits in the persist directory; an id unsafe as a file name is hashed."""
    p = snapshot_path(tmp_path, CID)
    assert p.parent == tmp_path / "chroma_sparse_ef"
    assert CID in p.name
    odd = snapshot_path(tmp_path, "../../etc/passwd")
    assert odd.parent == tmp_path / "chroma_sparse_ef"
    assert ".." not in odd.name


def test_layout_digest_is_stable_and_order_free() -> None:
    """Same layout, any key order, same digest; a different value, another digest."""
    assert layout_digest({"a": 1, "b": [1, 2]}) == layout_digest({"b": [1, 2], "a": 1})
    assert layout_digest({"a": 1}) != layout_digest({"a": 2})
