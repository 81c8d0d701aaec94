"""The sparse index's memory layout: the alive bitmap and int32 bounds, exact and checked.

`alive` is one bit per slot (`_bitmap`) and `bounds` int32 while a segment's postings fit;
neither may change a result, and a snapshot holding a malformed bitmap or bounds of an
unexpected dtype is refused even when every digest in it is valid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from chroma_sparse_ef.hybrid import _bitmap, _index, _segments, _snapshot
from chroma_sparse_ef.hybrid._index import IndexState, SparseIndex
from chroma_sparse_ef.hybrid._persist import _FrozenIndex
from chroma_sparse_ef.hybrid._snapshot import layout_digest, load_snapshot, write_snapshot
from tests.unit.test_sparse_index import Vector, reference

CID = "3f2a9c1e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"
LAYOUT = layout_digest({"sparse_key": "sparse_embedding"})
#: Slot counts around byte boundaries: the last byte's pad bits are in play for all but 8k.
SIZES = (1, 7, 9, 13, 64, 101, 1027)


@pytest.fixture(autouse=True)
def small_tiers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tier short lists and compact small indexes, so small corpora take every path."""
    monkeypatch.setattr(_segments, "TIER_MIN_POSTINGS", 8)
    monkeypatch.setattr(_index, "_COMPACT_MIN_SLOTS", 8)


def random_doc(rng: np.random.Generator, vocab: int = 40) -> Vector:
    nnz = int(rng.integers(1, 9))
    idx = np.sort(rng.choice(vocab, size=nnz, replace=False)).astype(np.int64)
    # Positive weights from a few values: pruning's bounds hold and ties are common.
    return idx, (rng.integers(1, 16, size=nnz) / 4).astype(np.float32)


def upsert(index: SparseIndex, docs: dict[str, Vector], new: dict[str, Vector]) -> None:
    index.upsert(list(new), [v[0] for v in new.values()], [v[1] for v in new.values()])
    docs.update(new)


def assert_alive_matches(index: SparseIndex, docs: dict[str, Vector]) -> None:
    """The bitmap is well formed and sets exactly the slots of the live records."""
    snap = index._snap
    assert snap.alive.dtype == np.uint8
    assert _bitmap.is_valid(snap.alive, snap.n_slots)
    live = {snap.slot_ids[s] for s in np.flatnonzero(snap.alive_mask()).tolist()}
    assert live == set(docs)
    assert len(index) == len(docs)
    assert index.dead_count == snap.n_slots - len(docs)


def assert_searches_match(
    index: SparseIndex, docs: dict[str, Vector], rng: np.random.Generator
) -> None:
    for _ in range(8):
        q_idx, q_val = random_doc(rng)
        limit = int(rng.integers(1, 15))
        assert index.search(q_idx, q_val, limit) == reference(docs, q_idx, q_val, limit)
        allowed = {f"d{i}" for i in rng.choice(len(docs) + 5, size=5).tolist()}
        got = index.search(q_idx, q_val, limit, allowed)
        assert got == reference(docs, q_idx, q_val, limit, allowed)


@pytest.mark.parametrize("n", SIZES)
def test_bitmap_tracks_live_records_through_every_write(n: int) -> None:
    """Through upserts (new and replacing), deletes, tail merges and compactions, at slot
    counts that are not multiples of 8, the bitmap sets exactly the live records' slots,
    its pad bits stay 0, and every search equals the brute-force reference."""
    rng = np.random.default_rng(n)
    docs = {f"d{i}": random_doc(rng) for i in range(n)}
    index = SparseIndex.build(
        list(docs), [v[0] for v in docs.values()], [v[1] for v in docs.values()]
    )
    assert_alive_matches(index, docs)
    compactions = 0
    for step in range(12):
        new_ids = rng.choice(n + 10, size=int(rng.integers(1, 6)), replace=False).tolist()
        slots_before = index._snap.n_slots
        upsert(index, docs, {f"d{i}": random_doc(rng) for i in new_ids})
        assert_alive_matches(index, docs)
        gone = [f"d{i}" for i in rng.choice(n + 10, size=max(1, n // 4), replace=False).tolist()]
        index.delete(gone)
        for record_id in gone:
            docs.pop(record_id, None)
        compactions += index._snap.n_slots < slots_before
        assert_alive_matches(index, docs)
        assert_searches_match(index, docs, rng)
        if step == 6:
            index.compact()
            assert_alive_matches(index, docs)
            assert index.dead_count == 0
    assert compactions > 0


def test_bitmap_helpers_agree_with_a_bool_mask() -> None:
    """pack, unpack, unpack_range, test, clear (repeated slots included) and extend give
    what the same operations on a bool mask give, with pad bits 0, for sizes 0 to 40."""
    rng = np.random.default_rng(5)
    for n in range(41):
        mask = rng.random(n) < 0.6
        bits = _bitmap.pack(mask)
        assert _bitmap.is_valid(bits, n)
        np.testing.assert_array_equal(_bitmap.unpack(bits, n), mask)
        slots = rng.integers(0, max(n, 1), size=2 * n) if n else np.empty(0, np.int64)
        np.testing.assert_array_equal(_bitmap.test(bits, slots), mask[slots])
        cleared = mask.copy()
        cleared[slots] = False
        got = _bitmap.clear(bits, slots)
        assert _bitmap.is_valid(got, n)
        np.testing.assert_array_equal(_bitmap.unpack(got, n), cleared)
        np.testing.assert_array_equal(_bitmap.unpack(bits, n), mask)  # the input is kept
        for start in range(n + 1):
            for stop in (start, (start + n) // 2 + 1, n):
                if start <= stop <= n:
                    got = _bitmap.unpack_range(bits, start, stop)
                    np.testing.assert_array_equal(got, mask[start:stop])
        for extra in (0, 1, 5, 8, 19):
            longer = _bitmap.extend(bits, n, extra)
            assert _bitmap.is_valid(longer, n + extra)
            expected = np.concatenate((mask, np.ones(extra, np.bool_)))
            np.testing.assert_array_equal(_bitmap.unpack(longer, n + extra), expected)


def test_is_valid_refuses_wrong_length_dirty_pad_and_other_dtypes() -> None:
    """A bitmap one byte short or long, with a pad bit set, or not uint8 is invalid."""
    bits = _bitmap.full(13)
    assert _bitmap.is_valid(bits, 13)
    assert not _bitmap.is_valid(bits[:1], 13)
    assert not _bitmap.is_valid(np.append(bits, np.uint8(0)), 13)
    assert not _bitmap.is_valid(bits | np.array([0, 1], np.uint8), 13)
    assert not _bitmap.is_valid(bits.astype(np.int8), 13)
    assert not _bitmap.is_valid(np.ones(13, np.bool_), 13)


def test_nbytes_is_the_arrays_bytes_with_1_bit_per_slot_and_28_bytes_per_term() -> None:
    """nbytes is exactly the bytes of the segments' arrays and of the bitmap: 8 per
    posting, 28 per distinct term and segment (int32 bounds), 1 bit per slot."""
    rng = np.random.default_rng(3)
    docs = {f"d{i}": random_doc(rng) for i in range(1001)}
    index = SparseIndex.build(
        list(docs), [v[0] for v in docs.values()], [v[1] for v in docs.values()]
    )
    upsert(index, docs, {f"d{i}": random_doc(rng) for i in range(0, 1200, 40)})
    index.delete([f"d{i}" for i in range(1, 300, 7)])
    snap = index._snap
    assert len(snap.segments) > 1
    arrays = [snap.alive]
    for seg in snap.segments:
        arrays += [seg.terms, seg.bounds, seg.rest_max, seg.slots, seg.weights]
        assert seg.bounds.dtype == np.int32
        assert seg.nbytes == 8 * seg.nnz + 28 * seg.terms.shape[0]
    assert index.nbytes == sum(int(a.nbytes) for a in arrays)
    assert snap.alive.nbytes == -(-snap.n_slots // 8)


def test_searches_keep_no_unpacked_mask() -> None:
    """After searches (plain, filtered, with IDF) and IDF counts, the published state holds
    the bitmap and no per-slot bool mask."""
    rng = np.random.default_rng(8)
    docs = {f"d{i}": random_doc(rng) for i in range(500)}
    index = SparseIndex.build(
        list(docs), [v[0] for v in docs.values()], [v[1] for v in docs.values()]
    )
    index.delete([f"d{i}" for i in range(0, 500, 9)])
    for _ in range(5):
        q_idx, q_val = random_doc(rng)
        index.search(q_idx, q_val, 10)
        index.search(q_idx, q_val, 10, {"d1", "d2", "d3"})
        index.search(q_idx, q_val, 10, idf_records=600)
        index.idf(q_idx, 600)
    snap = index._snap
    held = [snap.alive, *snap.cache.values()]
    assert not any(isinstance(v, np.ndarray) and v.dtype == np.bool_ for v in held)


def paired_indexes(
    monkeypatch: pytest.MonkeyPatch, docs: dict[str, Vector], limit: int
) -> tuple[SparseIndex, SparseIndex]:
    """The same records indexed with the int32-bounds threshold as shipped and at ``limit``."""
    args = (list(docs), [v[0] for v in docs.values()], [v[1] for v in docs.values()])
    extra = {f"n{i}": random_doc(np.random.default_rng(i)) for i in range(30)}

    def fill() -> SparseIndex:
        index = SparseIndex.build(*args)
        for key, vec in extra.items():  # one at a time: many small segments and merges
            index.upsert([key], [vec[0]], [vec[1]])
        return index

    narrow = fill()
    with monkeypatch.context() as m:
        m.setattr(_segments, "_INT32_BOUNDS_LIMIT", limit)
        wide = fill()
    docs.update(extra)
    return narrow, wide


@pytest.mark.parametrize("limit", [0, 200])
def test_int32_and_int64_bounds_score_identically_to_the_reference(
    monkeypatch: pytest.MonkeyPatch, limit: int
) -> None:
    """With the int32 threshold lowered (every segment int64, or only the large ones so
    that dtypes mix across segments), every search path returns exactly the reference."""
    from chroma_sparse_ef.hybrid import _scoring

    rng = np.random.default_rng(limit + 1)
    docs = {f"d{i}": random_doc(rng) for i in range(700)}
    narrow, wide = paired_indexes(monkeypatch, docs, limit)
    assert {s.bounds.dtype for s in narrow._snap.segments} == {np.dtype(np.int32)}
    wide_dtypes = {s.bounds.dtype for s in wide._snap.segments}
    assert np.dtype(np.int64) in wide_dtypes
    if limit:
        assert np.dtype(np.int32) in wide_dtypes
    for prune_min, direct_max in ((0, -1), (10**18, -1), (10**18, 10**9)):
        monkeypatch.setattr(_scoring, "_PRUNE_MIN_POSTINGS", prune_min)
        monkeypatch.setattr(_scoring, "_DIRECT_MAX_SLOTS", direct_max)
        for _ in range(10):
            q_idx, q_val = random_doc(rng)
            allowed = {f"d{i}" for i in rng.choice(700, size=40).tolist()}
            for kw in ({}, {"allowed": allowed}):
                want = reference(docs, q_idx, q_val, 10, kw.get("allowed"))
                assert narrow.search(q_idx, q_val, 10, **kw) == want  # type: ignore[arg-type]
                assert wide.search(q_idx, q_val, 10, **kw) == want  # type: ignore[arg-type]
            got = narrow.search(q_idx, q_val, 10, idf_records=800)
            assert wide.search(q_idx, q_val, 10, idf_records=800) == got
            np.testing.assert_array_equal(narrow.idf(q_idx, 800), wide.idf(q_idx, 800))


# ---------------------------------------------------------------------- snapshots


def sample(monkeypatch: pytest.MonkeyPatch, n: int = 301) -> SparseIndex:
    """Several segments, int32 and int64 bounds, tombstones, an odd slot count."""
    rng = np.random.default_rng(n)
    docs = {f"d{i}": random_doc(rng) for i in range(n)}
    _, index = paired_indexes(monkeypatch, docs, 200)
    index.delete([f"d{i}" for i in range(0, n, 5)])
    assert index._snap.n_slots % 8
    assert index.dead_count
    assert len({s.bounds.dtype for s in index._snap.segments}) == 2
    return index


def write_state(path: Path, state: IndexState) -> None:
    """Store ``state`` as given, malformed or not: what a writer of another version or
    with a bug could store, with valid digests."""
    write_snapshot(path, _FrozenIndex(state), collection_id=CID, watermark=1, layout=LAYOUT)


def load(path: Path) -> _snapshot.LoadedSnapshot | None:
    return load_snapshot(path, collection_id=CID, layout=LAYOUT)


def test_snapshot_round_trips_the_bitmap_and_both_bounds_dtypes(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A loaded snapshot holds the same bitmap bytes and bounds dtypes, and answers the
    same searches bit for bit."""
    index = sample(monkeypatch)
    write_snapshot(tmp_path / "s", index, collection_id=CID, watermark=1, layout=LAYOUT)
    loaded = load(tmp_path / "s")
    assert loaded is not None
    got, want = loaded.index._snap, index._snap
    np.testing.assert_array_equal(got.alive, want.alive)
    assert [s.bounds.dtype for s in got.segments] == [s.bounds.dtype for s in want.segments]
    rng = np.random.default_rng(0)
    for _ in range(10):
        q_idx, q_val = random_doc(rng)
        assert loaded.index.search(q_idx, q_val, 10) == index.search(q_idx, q_val, 10)


@pytest.mark.parametrize("change", ["short", "long", "pad", "bool"])
def test_snapshot_with_a_malformed_bitmap_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, change: str
) -> None:
    """A bitmap a byte short or long, with a pad bit set, or stored as one bool per slot
    (format 1's mask) gives None, though every digest in the file is valid."""
    state = sample(monkeypatch).export_state()
    bits = state.alive
    dirty = bits.copy()
    dirty[-1] |= 1  # the last slot count is odd: bit 0 of the last byte is padding
    bad: npt.NDArray[np.generic] = {
        "short": bits[:-1],
        "long": np.append(bits, np.uint8(0)),
        "pad": dirty,
        "bool": _bitmap.unpack(bits, len(state.slot_ids)),
    }[change]
    write_state(tmp_path / "s", IndexState(state.slot_ids, bad, state.segments))  # type: ignore[arg-type]
    assert load(tmp_path / "s") is None
    write_state(tmp_path / "s", state)
    assert load(tmp_path / "s") is not None


@pytest.mark.parametrize("dtype", [np.int16, np.uint32, np.uint64, np.float64])
def test_snapshot_with_bounds_of_another_dtype_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, dtype: type[np.generic]
) -> None:
    """Bounds stored as anything but int32 or int64 give None, even with the same values."""
    state = sample(monkeypatch).export_state()
    first, *rest = state.segments
    odd = _segments.Segment(
        first.terms,
        first.bounds.astype(dtype),  # type: ignore[arg-type]
        first.rest_max,
        first.slots,
        first.weights,
        first.all_positive,
    )
    write_state(tmp_path / "s", IndexState(state.slot_ids, state.alive, (odd, *rest)))
    assert load(tmp_path / "s") is None


def test_format_1_snapshot_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A file of the previous format (bool mask, int64 bounds, version 1) gives None, so
    the caller rebuilds from Chroma."""
    state = sample(monkeypatch).export_state()
    old = tuple(
        _segments.Segment(
            s.terms, s.bounds.astype(np.int64), s.rest_max, s.slots, s.weights, s.all_positive
        )
        for s in state.segments
    )
    mask = _bitmap.unpack(state.alive, len(state.slot_ids))
    with monkeypatch.context() as m:
        m.setattr(_snapshot, "FORMAT_VERSION", 1)
        write_state(tmp_path / "s", IndexState(state.slot_ids, mask, old))  # type: ignore[arg-type]
    assert load(tmp_path / "s") is None


def test_from_state_refuses_a_malformed_bitmap(monkeypatch: pytest.MonkeyPatch) -> None:
    """from_state raises ValueError for a bitmap of the wrong length or with a pad bit."""
    state = sample(monkeypatch).export_state()
    with pytest.raises(ValueError, match="bitmap"):
        SparseIndex.from_state(IndexState(state.slot_ids, state.alive[:-1], state.segments))
    dirty = state.alive.copy()
    dirty[-1] |= 1
    with pytest.raises(ValueError, match="bitmap"):
        SparseIndex.from_state(IndexState(state.slot_ids, dirty, state.segments))
