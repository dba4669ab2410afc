"""memsys.mmsb: the bus, pages and their views, batches, recompute functions, replay, the log
tools and the typed errors."""

from __future__ import annotations

import gzip
import json
import os
import struct
import sys
import textwrap
import time
from pathlib import Path

import pytest

from memsys import MemsysError, mmsb


@pytest.fixture
def bus(tmp_path: Path):
    b = mmsb.Bus.start(tmp_path / "bus")
    yield b
    b.close()


def word_count(doc: bytes) -> int:
    """The direct value: words of the document (zero bytes are padding, not text)."""
    return len(doc.replace(b"\x00", b" ").split())


def word_count_fn(parents):
    """The recompute function: the same count, over the parent's zero-copy view."""
    assert isinstance(parents[0], memoryview) and parents[0].readonly
    return struct.pack("<Q", word_count(bytes(parents[0])))


def gap_word_count_fn(parents):
    """Words of a gap-buffer document: parents are [header (gap start, gap end), document]."""
    gs, ge = struct.unpack("<QQ", parents[0])
    d = parents[1]
    return struct.pack("<Q", word_count(bytes(d[:gs]) + bytes(d[ge:])))


def read_count(page) -> int:
    return struct.unpack("<Q", page.read())[0]


# --- the editing trace --------------------------------------------------------------------------


class GapDoc:
    """The document as a gap buffer in one page (the layout of mmsb-trace's doc page): text
    before the gap, the gap, text after it ending at the end of the page. Every change is a
    `write_range` of exactly the bytes that move or are inserted, kept in a batch; `mirror` is
    the page's bytes as the writes leave them."""

    def __init__(self, page, capacity: int):
        self.page = page
        self.mirror = bytearray(capacity)
        self.gap_start = 0
        self.gap_end = capacity

    def _write(self, batch, offset: int, data: bytes) -> None:
        if data:
            self.mirror[offset : offset + len(data)] = data
            batch.write_range(self.page, offset, data)

    def move_gap(self, batch, pos: int) -> None:
        if pos < self.gap_start:
            n = self.gap_start - pos
            moved = bytes(self.mirror[pos : self.gap_start])
            self.gap_end -= n
            self.gap_start = pos
            self._write(batch, self.gap_end, moved)
        elif pos > self.gap_start:
            n = pos - self.gap_start
            moved = bytes(self.mirror[self.gap_end : self.gap_end + n])
            self._write(batch, self.gap_start, moved)
            self.gap_start += n
            self.gap_end += n

    def patch(self, batch, pos: int, delete: int, text: str) -> None:
        self.move_gap(batch, pos)
        self.gap_end += delete
        ins = text.encode()
        self._write(batch, self.gap_start, ins)
        self.gap_start += len(ins)

    def text(self) -> bytes:
        return bytes(self.mirror[: self.gap_start] + self.mirror[self.gap_end :])

    def finish(self, batch) -> int:
        """Moves the gap to the end and zeroes it: the page is the document then zeros."""
        cap = len(self.mirror)
        self.move_gap(batch, self.gap_start + (cap - self.gap_end))
        self._write(batch, self.gap_start, bytes(cap - self.gap_start))
        return self.gap_start


def test_automerge_trace_applied_with_write_range_replays_to_end_content(
    shared_data: Path, tmp_path: Path
):
    trace = json.load(gzip.open(shared_data / "editing-traces" / "automerge-paper.json.gz"))
    start, end = trace["startContent"], trace["endContent"]
    patches = [p for t in trace["txns"] for p in t["patches"]]
    # ASCII trace: char positions are byte positions (mmsb-trace walks UTF-8 otherwise).
    assert start.isascii() and end.isascii()
    length, longest = len(start), len(start)
    for _, d, ins in patches:
        length += len(ins) - d
        longest = max(longest, length)
    capacity = -(-max(longest, 1) // 64) * 64

    wave_every = 100  # transactions per commit, as `mmsb trace` (--wave-every default)
    log = tmp_path / "trace"
    t0 = time.perf_counter()
    with mmsb.Bus.start(log, "flush", timings=False) as bus:
        doc = bus.create_page(capacity)
        # The gap's edges, written once per commit (as mmsb-trace's header page).
        header = bus.create_page(16)
        words = bus.create_page(8)
        bus.add_dependency(header, words)
        bus.add_dependency(doc, words)
        bus.register_recompute(words, gap_word_count_fn)
        g = GapDoc(doc, capacity)

        def commit(patches) -> None:
            with bus.batch() as b:
                for pos, d, ins in patches:
                    g.patch(b, pos, d, ins)
                b.update(header, struct.pack("<QQ", g.gap_start, g.gap_end))

        commit([(0, 0, start)])
        for i in range(0, len(patches), wave_every):
            commit(patches[i : i + wave_every])
            if i % (100 * wave_every) == 0:
                assert read_count(words) == word_count(g.text())
        with bus.batch() as b:
            n = g.finish(b)
            b.update(header, struct.pack("<QQ", n, capacity))
        elapsed = time.perf_counter() - t0
        assert doc.read() == bytes(g.mirror)
        assert read_count(words) == word_count(end.encode())
        replayed = bus.replay_to()
        commits = bus.stats()["commits"]
    print(
        f"\nautomerge-paper: {len(patches)} patches through write_range, {commits} commits, "
        f"a Python word-count recompute per commit: {elapsed:.2f} s from Python "
        f"({len(patches) / elapsed:,.0f} patches/s)"
    )
    n = struct.unpack("<QQ", replayed.page(header.id).read())[0]
    assert replayed.page(doc.id).read()[:n].decode() == end
    assert read_count(replayed.page(words.id)) == word_count(end.encode())
    # A restart restores the same document from the log.
    with mmsb.Bus.start(log) as again:
        assert again.page(doc.id).read()[:n].decode() == end


# --- recompute functions -----------------------------------------------------------------------


def test_word_count_page_follows_document_through_updates_and_batches(bus):
    doc = bus.create_page(256)
    count = bus.create_page(8)
    bus.add_dependency(doc, count)
    bus.register_recompute(count, word_count_fn)
    text = bytearray(256)

    def put(offset: int, data: bytes) -> None:
        text[offset : offset + len(data)] = data

    doc.write_range(0, b"the quick brown fox")
    put(0, b"the quick brown fox")
    assert read_count(count) == word_count(bytes(text)) == 4
    doc.update(b"a b c d e f".ljust(256, b"\x00"))
    text[:] = b"a b c d e f".ljust(256, b"\x00")
    assert read_count(count) == word_count(bytes(text)) == 6
    with bus.batch() as b:
        b.write_range(doc, 11, b" g h i")
        b.write_range(doc, 0, b"A")
        put(11, b" g h i")
        put(0, b"A")
    assert read_count(count) == word_count(bytes(text)) == 9
    assert doc.read() == bytes(text)
    # One batch is one wave: the derived page was recomputed once for both writes.
    assert b.result["propagated"] == 1
    bus.verify_consistency()


def test_derived_page_cannot_be_written_directly(bus):
    doc, count = bus.create_page(16), bus.create_page(8)
    bus.add_dependency(doc, count)
    bus.register_recompute(count, word_count_fn)
    with pytest.raises(mmsb.DerivedError) as e:
        count.write_range(0, b"x")
    assert e.value.page == count.id


def test_exception_in_recompute_function_reaches_the_writer(bus):
    doc, out = bus.create_page(16), bus.create_page(8)
    bus.add_dependency(doc, out)

    class Boom(Exception):
        pass

    def f(parents):
        raise Boom("from the recompute function")

    bus.register_recompute(out, f)
    with pytest.raises(Boom, match="from the recompute function"):
        doc.write_range(0, b"abc")
    # The write itself is logged and committed; the derived page kept its bytes.
    assert doc.read()[:3] == b"abc"
    assert out.read() == bytes(8)
    bus.register_recompute(out, lambda ps: bytes(ps[0])[:8])
    assert bus.recompute_now([out]) == 1
    assert out.read() == b"abc".ljust(8, b"\x00")


def test_recompute_function_returning_a_wrong_value_raises_typed_python_errors(bus):
    doc, out = bus.create_page(16), bus.create_page(4)
    bus.add_dependency(doc, out)
    bus.register_recompute(out, lambda ps: 42)
    with pytest.raises(TypeError):
        doc.write_range(0, b"a")
    bus.register_recompute(out, lambda ps: b"12345")
    with pytest.raises(ValueError):
        doc.write_range(0, b"b")


def test_recompute_function_calling_into_its_bus_raises_instead_of_deadlocking(bus):
    doc, out = bus.create_page(16), bus.create_page(8)
    bus.add_dependency(doc, out)
    bus.register_recompute(out, lambda ps: doc.read()[:8])
    with pytest.raises(mmsb.MmsbError, match="recompute function cannot call into its bus"):
        doc.write_range(0, b"a")


# --- batches -----------------------------------------------------------------------------------


def test_exception_inside_batch_applies_nothing(bus):
    p = bus.create_page(32)
    before = (bus.last_lsn, p.epoch, p.read())
    with pytest.raises(ZeroDivisionError):
        with bus.batch() as b:
            b.write_range(p, 0, b"abc")
            b.update(p, b"z" * 32)
            1 / 0
    assert (bus.last_lsn, p.epoch, p.read()) == before
    assert b.result is None


def test_batch_normal_exit_commits_every_write_at_once(bus):
    p, q = bus.create_page(32), bus.create_page(32)
    lsn0 = bus.last_lsn
    with bus.batch() as b:
        b.write_range(p, 0, b"abc")
        b.write_range(q, 4, b"def")
        assert p.read() == bytes(32)  # kept aside until the block ends
    assert p.read()[:3] == b"abc" and q.read()[4:7] == b"def"
    assert b.result["deltas"] == 2 and b.result["lsn"] == bus.last_lsn == lsn0 + 3
    kinds = [f["kind"] for f in mmsb.log_frames(bus.dir, start_lsn=lsn0 + 1)]
    assert kinds == ["delta", "delta", "commit"]


def test_batch_with_an_invalid_write_applies_nothing(bus):
    p = bus.create_page(8)
    lsn0 = bus.last_lsn
    b = bus.batch()
    b.write_range(p, 0, b"ok")
    b.write_range(p, 6, b"too long")
    with pytest.raises(mmsb.OutOfBoundsError):
        b.commit()
    assert bus.last_lsn == lsn0 and p.read() == bytes(8)


# --- checkpoint and replay ---------------------------------------------------------------------


def test_replay_to_lsn_epoch_and_time_give_the_state_current_then(bus):
    p = bus.create_page(16)
    seen = []  # (lsn, epoch, time_ns, bytes) after each write
    for i, word in enumerate([b"one", b"two", b"three", b"four"]):
        lsn = p.update(word.ljust(16, b"."))
        seen.append((lsn, p.epoch, time.time_ns(), p.read()))
        if i == 1:
            ck = bus.checkpoint()
            assert ck["lsn"] == lsn and Path(ck["path"]).is_file()
        time.sleep(0.002)
    for lsn, epoch, t_ns, data in seen:
        assert bus.replay_to(lsn=lsn).page(p.id).read() == data
        s = bus.replay_to(page=p, epoch=epoch)
        assert s.page(p.id).read() == data and s.page(p.id).epoch == epoch
        assert bus.replay_to(time_ns=t_ns).page(p.id).read() == data
        assert bus.replay_to(time=t_ns / 1e9).page(p.id).epoch in (epoch, epoch - 1)
    # The log's own timestamps are exact targets.
    frames = [f for f in mmsb.log_frames(bus.dir) if f["kind"] == "delta"]
    for f, (_, _, _, data) in zip(frames, seen):
        assert bus.replay_to(time_ns=f["timestamp_ns"]).page(p.id).read() == data
    # A detached state is a copy: later writes do not change it.
    s = bus.replay_to()
    p.update(bytes(16))
    assert s.page(p.id).read() == seen[-1][3]
    assert bytes(memoryview(s.page(p.id))) == seen[-1][3]
    assert mmsb.replay(bus.dir, lsn=seen[0][0]).page(p.id).read() == seen[0][3]


def test_replay_past_the_end_raises_target_beyond_log(bus):
    bus.create_page(8)
    with pytest.raises(mmsb.TargetBeyondLogError) as e:
        bus.replay_to(lsn=bus.last_lsn + 10)
    assert e.value.last == bus.last_lsn


def test_stats_counts_deltas_commits_and_recomputes(bus):
    doc, count = bus.create_page(64), bus.create_page(8)
    bus.add_dependency(doc, count)
    bus.register_recompute(count, word_count_fn)
    doc.write_range(0, b"a b")
    doc.write_range(4, b"c")
    s = bus.stats()
    assert s["pages"] == 2 and s["page_bytes"] == 72
    assert s["deltas"] == 4 and s["propagation_deltas"] == 2 and s["recomputes"] == 2
    assert s["graph_edges"] == 1 and s["last_lsn"] == bus.last_lsn
    assert set(s["log_append"]) == PERCENTILES_KEYS
    assert s["log_append"]["count"] == s["log_frames"]


PERCENTILES_KEYS = {"count", "p50_ns", "p99_ns", "p999_ns", "max_ns", "sum_ns"}

# Every field of mmsb::Stats (crates/mmsb/src/stats.rs).
STATS_KEYS = {
    "pages",
    "page_bytes",
    "deltas",
    "delta_bytes",
    "propagation_deltas",
    "propagation_delta_bytes",
    "commits",
    "waves",
    "recomputes",
    "cutoffs",
    "stale_marks",
    "graph_nodes",
    "graph_edges",
    "graph_depth",
    "last_lsn",
    "durable_lsn",
    "log_frames",
    "log_bytes",
    "log_syncs",
    "log_write_errors",
    "recovery_truncated_frames",
    "recovery_truncated_bytes",
    "delta_apply",
    "log_append",
    "propagation",
}


def test_stats_dict_has_every_field_of_the_rust_stats_with_sensible_values(tmp_path: Path):
    with mmsb.Bus.start(tmp_path / "bus") as b:
        fresh = b.stats()
        assert set(fresh) == STATS_KEYS
        for k in ("delta_apply", "log_append", "propagation"):
            assert set(fresh[k]) == PERCENTILES_KEYS, k
        assert fresh["log_write_errors"] == 0
        assert fresh["recovery_truncated_frames"] == fresh["recovery_truncated_bytes"] == 0
        assert fresh["propagation_delta_bytes"] == 0
        assert fresh["durable_lsn"] == fresh["last_lsn"] == b.last_lsn

        doc, count = b.create_page(64), b.create_page(8)
        b.add_dependency(doc, count)
        b.register_recompute(count, word_count_fn)
        doc.write_range(0, b"a b")
        doc.write_range(4, b"c d")
        s = b.stats()
        # "flush" writes each commit but syncs none: nothing new is known to be durable.
        assert s["durable_lsn"] <= s["last_lsn"] == b.last_lsn
        b.sync()
        s = b.stats()
        assert s["durable_lsn"] == s["last_lsn"] == b.last_lsn
        # The two recomputes wrote the 8-byte count (1, then 2: one byte changed each time).
        assert s["propagation_deltas"] == 2
        assert 0 < s["propagation_delta_bytes"] <= 2 * 8
        assert s["propagation_delta_bytes"] < s["delta_bytes"]
        assert s["log_write_errors"] == 0
        for k in ("delta_apply", "log_append", "propagation"):
            p = s[k]
            assert p["count"] > 0, k
            # Every sample is at least 1 ns and at most max_ns (to 0.1% histogram precision).
            assert p["count"] <= p["sum_ns"] <= p["count"] * p["max_ns"] * 1.001 + 1, (k, p)
        assert fresh["log_append"]["sum_ns"] <= s["log_append"]["sum_ns"]


def test_stats_report_what_recovery_cut_off_the_log(tmp_path: Path):
    with mmsb.Bus.start(tmp_path / "bus", "fsync") as b:
        p = b.create_page(8)
        p.write_range(0, b"kept")
        p.write_range(0, b"torn")
        last = b.last_lsn
    segment = max((tmp_path / "bus").glob("*.tlog"))
    size = segment.stat().st_size
    os.truncate(segment, size - 5)  # the last frame torn: its last 5 bytes never written
    with mmsb.Bus.start(tmp_path / "bus") as b:
        t = b.start_report["truncated"]
        assert t is not None and t["frames_dropped"] == 0
        assert 0 < t["bytes_dropped"] < size - 5
        s = b.stats()
        assert s["recovery_truncated_bytes"] == t["bytes_dropped"]
        assert s["recovery_truncated_frames"] == 0
        assert b.page(p.id).read() == b"kept\x00\x00\x00\x00"
        # What recovery kept counts as durable.
        assert s["durable_lsn"] == s["last_lsn"] == last - 1
        assert s["log_write_errors"] == 0


# --- the log tools -----------------------------------------------------------------------------


def make_log(dir: Path, n: int = 20) -> list[int]:
    with mmsb.Bus.start(dir, "fsync") as b:
        p = b.create_page(4096)
        return [p.write_range(i * 100, f"frame {i:03d}".encode() * 4) for i in range(n)]


def test_log_verify_passes_on_a_good_log(tmp_path: Path):
    lsns = make_log(tmp_path / "log")
    r = mmsb.log_verify(tmp_path / "log")
    assert r["ok"] and r["problems"] == [] and r["last_lsn"] == lsns[-1]
    assert r["frames"] == len(lsns) + 1


def test_log_verify_on_a_flipped_byte_raises_corrupt_frame_naming_offset_and_lsn(tmp_path: Path):
    log = tmp_path / "log"
    lsns = make_log(log)
    frames = mmsb.log_frames(log)
    victim = frames[len(frames) // 2]
    seg = Path(victim["file"])
    raw = bytearray(seg.read_bytes())
    raw[victim["offset"] + victim["length"] - 8] ^= 0x40  # a payload byte of a middle frame
    seg.write_bytes(raw)
    with pytest.raises(mmsb.CorruptFrameError) as e:
        mmsb.log_verify(log)
    assert e.value.offset == victim["offset"] and e.value.lsn == victim["lsn"]
    assert e.value.file == str(seg) and str(victim["offset"]) in str(e.value)
    assert not e.value.report["ok"]
    r = mmsb.log_verify(log, strict=False)
    [problem] = r["problems"]
    assert problem["offset"] == victim["offset"] and problem["lsn"] == victim["lsn"]
    assert lsns[-1] == r["last_lsn"]
    with pytest.raises(mmsb.CorruptFrameError):
        mmsb.Bus.start(log)


def test_log_frames_lists_every_frame_in_lsn_order(tmp_path: Path):
    lsns = make_log(tmp_path / "log", n=5)
    frames = mmsb.log_frames(tmp_path / "log")
    assert [f["lsn"] for f in frames] == list(range(1, lsns[-1] + 1))
    assert frames[0]["kind"] == "create_page" and frames[0]["size"] == 4096
    deltas = [f for f in frames if f["kind"] == "delta"]
    assert [f["lsn"] for f in deltas] == lsns
    assert all(f["page"] == 1 and f["payload_bytes"] == 36 and f["commit"] for f in deltas)
    assert [f["epoch"] for f in deltas] == [1, 2, 3, 4, 5]
    assert len(mmsb.log_frames(tmp_path / "log", start_lsn=3, limit=2)) == 2


# --- views -------------------------------------------------------------------------------------


def test_view_is_zero_copy_and_read_only(bus):
    np = pytest.importorskip("numpy")
    p = bus.create_page(64)
    p.write_range(0, b"abc")
    v = p.view()
    assert v.readonly and v.nbytes == 64 and v[:3] == b"abc"
    with pytest.raises(TypeError):
        v[0] = 1
    a, b2 = np.frombuffer(p, dtype=np.uint8), np.frombuffer(memoryview(p), dtype=np.uint8)
    assert a.ctypes.data == b2.ctypes.data  # the same bytes, not copies
    with pytest.raises(BufferError):
        p.write_range(0, b"x")
    del a, b2
    v.release()
    p.write_range(0, b"x")


def test_write_while_view_alive_raises_buffer_error_and_works_after_release(bus):
    p = bus.create_page(16)
    v = memoryview(p)
    with pytest.raises(BufferError):
        p.write_range(0, b"x")
    with pytest.raises(BufferError):
        p.update(bytes(16))
    with pytest.raises(BufferError):
        with bus.batch() as b:
            b.write_range(p, 0, b"y")
    assert bytes(v) == bytes(16) and p.epoch == 0
    v.release()
    assert p.write_range(0, b"x") is not None
    assert p.read()[:1] == b"x"


def test_write_to_a_parent_while_a_view_of_its_derived_page_is_alive_raises_buffer_error(bus):
    doc, count = bus.create_page(16), bus.create_page(8)
    bus.add_dependency(doc, count)
    bus.register_recompute(count, word_count_fn)
    with memoryview(count):
        with pytest.raises(BufferError, match="derived from page"):
            doc.write_range(0, b"a b")
    doc.write_range(0, b"a b")
    assert read_count(count) == 2


def test_close_while_view_alive_raises_buffer_error(tmp_path: Path):
    b = mmsb.Bus.start(tmp_path / "bus")
    p = b.create_page(8)
    v = memoryview(p)
    with pytest.raises(BufferError):
        b.close()
    assert not b.closed
    v.release()
    b.close()
    assert b.closed
    with pytest.raises(mmsb.MmsbError, match="closed"):
        memoryview(p)


USE_AFTER = textwrap.dedent(
    """
    import gc, struct, sys
    from memsys import mmsb
    bus = mmsb.Bus.start(sys.argv[1])
    doc, out = bus.create_page(1 << 16), bus.create_page(8)
    bus.add_dependency(doc, out)
    kept = []
    def f(parents):
        kept.append(parents[0])                 # the memoryview itself (released after the call)
        kept.append(parents[0].obj)             # the exporter (refuses new exports after it)
        return struct.pack("<Q", len(bytes(parents[0]).split()))
    bus.register_recompute(out, f)
    doc.write_range(0, b"a b c")
    try:
        kept[0][0]
        print("FAIL: released view readable")
    except ValueError:
        print("released memoryview refused")
    try:
        memoryview(kept[1])
        print("FAIL: stale exporter exported")
    except BufferError:
        print("stale parent view refused")
    v = memoryview(doc)
    del bus
    gc.collect()                                # the bus object goes, the view keeps its pages
    print(bytes(v[:5]).decode())
    v.release()
    bus2 = mmsb.Bus.start(sys.argv[2])
    p = bus2.create_page(1 << 20)
    w = memoryview(p)
    for _ in range(3):
        try:
            bus2.close()
        except BufferError:
            pass
    print(sum(w[:1000]))                        # still readable: close was refused
    w.release()
    bus2.close()
    try:
        memoryview(p)
    except mmsb.MmsbError:
        print("view of a closed bus refused")
    print("done")
    """
)


def test_views_never_reach_freed_memory_in_a_subprocess(run_python, tmp_path: Path):
    cp = run_python(USE_AFTER, str(tmp_path / "a"), str(tmp_path / "b"))
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout.split("\n") == [
        "released memoryview refused",
        "stale parent view refused",
        "a b c",
        "0",
        "view of a closed bus refused",
        "done",
        "",
    ], cp.stdout + cp.stderr


def test_parent_view_kept_by_the_function_pins_the_parent(bus):
    np = pytest.importorskip("numpy")
    doc, out = bus.create_page(16), bus.create_page(8)
    bus.add_dependency(doc, out)
    kept = []

    def f(parents):
        kept.append(np.frombuffer(parents[0], dtype=np.uint8))
        return None

    bus.register_recompute(out, f)
    doc.write_range(0, b"abc")
    assert bytes(kept[0][:3]) == b"abc"
    with pytest.raises(BufferError):
        doc.write_range(0, b"x")
    kept.clear()
    doc.write_range(0, b"x")  # the function keeps a view of the new bytes too
    assert bytes(kept[0][:3]) == b"xbc"
    with pytest.raises(BufferError):
        bus.close()
    kept.clear()


# --- errors ------------------------------------------------------------------------------------


def provoke_no_such_page(tmp_path, bus):
    bus.page(99)


def provoke_invalid_page_size(tmp_path, bus):
    bus.create_page(0)


def provoke_size_mismatch(tmp_path, bus):
    bus.create_page(8).update(b"short")


def provoke_out_of_bounds(tmp_path, bus):
    bus.create_page(8).write_range(4, b"12345")


def provoke_cycle(tmp_path, bus):
    a, b = bus.create_page(8), bus.create_page(8)
    bus.add_dependency(a, b)
    bus.add_dependency(b, a)


def provoke_derived(tmp_path, bus):
    a, b = bus.create_page(8), bus.create_page(8)
    bus.add_dependency(a, b)
    bus.register_recompute(b, lambda ps: None)
    b.update(bytes(8))


def provoke_target_beyond_log(tmp_path, bus):
    bus.replay_to(lsn=1000)


def provoke_locked(tmp_path, bus):
    mmsb.Bus.start(bus.dir, lock_timeout=0)


def provoke_not_a_log(tmp_path, bus):
    d = tmp_path / "other"
    d.mkdir()
    (d / "notes.txt").write_text("not a log")
    mmsb.Bus.start(d)


def provoke_io(tmp_path, bus):
    mmsb.log_frames(tmp_path / "missing")


def provoke_bad_magic(tmp_path, bus):
    f = tmp_path / "00000000000000000001.tlog"
    f.write_bytes(b"NOTALOG!" + bytes(64))
    mmsb.log_frames(f)


def provoke_metadata_key_too_long(tmp_path, bus):
    bus.create_page(8).set_metadata("k" * 70_000, b"v")


def provoke_corrupt_frame(tmp_path, bus):
    test_log_verify_on_a_flipped_byte_raises_corrupt_frame_naming_offset_and_lsn(tmp_path)
    mmsb.log_verify(tmp_path / "log")


def provoke_damaged_tail(tmp_path, bus):
    log = tmp_path / "log"
    make_log(log, n=5)
    last = mmsb.log_frames(log)[-1]
    seg = Path(last["file"])
    raw = bytearray(seg.read_bytes())
    raw[last["offset"] + last["length"] - 6] ^= 1  # a byte of the last frame
    seg.write_bytes(raw)
    try:
        mmsb.log_verify(log)
    except mmsb.DamagedTailError as e:
        assert (e.offset, e.lsn) == (last["offset"], last["lsn"])
        raise


def provoke_not_regular_file(tmp_path, bus):
    other = tmp_path / "linked"
    other.mkdir()
    (other / "LOGID").write_bytes((bus.dir / "LOGID").read_bytes())
    bus.create_page(8)
    bus.flush()
    for seg in bus.dir.glob("*.tlog"):
        (other / seg.name).symlink_to(seg)
    mmsb.log_frames(other)


@pytest.mark.parametrize(
    "provoke, cls, attrs",
    [
        (provoke_no_such_page, mmsb.NoSuchPageError, {"page": 99}),
        (provoke_invalid_page_size, mmsb.InvalidPageSizeError, {"size": 0}),
        (provoke_size_mismatch, mmsb.SizeMismatchError, {"expected": 8, "found": 5}),
        (provoke_out_of_bounds, mmsb.OutOfBoundsError, {"offset": 4, "end": 9, "size": 8}),
        (provoke_cycle, mmsb.CycleError, {"parent": 2, "child": 1}),
        (provoke_derived, mmsb.DerivedError, {"page": 2}),
        (provoke_target_beyond_log, mmsb.TargetBeyondLogError, {"last": 0}),
        (provoke_locked, mmsb.LockedError, {}),
        (provoke_not_a_log, mmsb.NotALogError, {}),
        (provoke_io, mmsb.IoError, {"errno": 2}),
        (provoke_bad_magic, mmsb.BadMagicError, {"what": "log segment"}),
        (provoke_metadata_key_too_long, mmsb.MetadataKeyTooLongError, {"len": 70_000}),
        (provoke_corrupt_frame, mmsb.CorruptFrameError, {}),
        (provoke_damaged_tail, mmsb.DamagedTailError, {}),
        (provoke_not_regular_file, mmsb.NotRegularFileError, {"found": "a symbolic link"}),
    ],
    ids=lambda x: x.__name__ if isinstance(x, type) else None,
)
def test_each_error_arrives_as_its_own_exception_class(tmp_path, bus, provoke, cls, attrs):
    with pytest.raises(cls) as e:
        provoke(tmp_path, bus)
    assert type(e.value) is cls
    assert isinstance(e.value, mmsb.MmsbError) and isinstance(e.value, MemsysError)
    assert not isinstance(e.value, RuntimeError)
    for k, v in attrs.items():
        assert getattr(e.value, k) == v, (k, getattr(e.value, k))


def test_every_rust_error_variant_has_its_own_class():
    names = [n for n in dir(mmsb) if n.endswith("Error") and n != "MmsbError"]
    assert len(names) == 34
    for n in names:
        cls = getattr(mmsb, n)
        assert issubclass(cls, mmsb.MmsbError) and cls.__module__ == "memsys.mmsb"
    assert issubclass(mmsb.MmsbError, MemsysError)


# --- start options -----------------------------------------------------------------------------


@pytest.mark.parametrize("durability", ["buffered", "flush", "fsync", "fsync:4", "group", "group:2"])
def test_every_durability_mode_survives_a_restart(tmp_path: Path, durability: str):
    with mmsb.Bus.start(tmp_path / "bus", durability) as b:
        p = b.create_page(8)
        p.write_range(0, b"durable")
    with mmsb.Bus.start(tmp_path / "bus") as b:
        assert b.page(p.id).read() == b"durable\x00"
        assert b.start_report["last_lsn"] == 2


def test_unknown_durability_is_a_value_error(tmp_path: Path):
    with pytest.raises(ValueError, match="unknown durability"):
        mmsb.Bus.start(tmp_path / "bus", "sometimes")


def test_restart_restores_from_the_checkpoint(tmp_path: Path):
    with mmsb.Bus.start(tmp_path / "bus") as b:
        p = b.create_page(8)
        p.write_range(0, b"ckpt")
        ck = b.checkpoint()
        p.write_range(4, b"+log")
    with mmsb.Bus.start(tmp_path / "bus") as b:
        assert b.start_report["checkpoint_lsn"] == ck["lsn"]
        assert b.page(p.id).read() == b"ckpt+log"


# --- the GIL -----------------------------------------------------------------------------------

WAITER_HOLDS_NO_GIL = textwrap.dedent(
    """
    import sys, threading, time
    from memsys import mmsb
    bus = mmsb.Bus.start(sys.argv[1])
    doc, out = bus.create_page(8), bus.create_page(8)
    bus.add_dependency(doc, out)
    entered = threading.Event()
    def slow(parents):
        entered.set()
        time.sleep(0.3)        # lets other threads run; they must not take the GIL for good
        return bytes(parents[0])
    bus.register_recompute(out, slow)
    writer = threading.Thread(target=doc.write_range, args=(0, b"slow"))
    writer.start()
    entered.wait()
    # This thread now waits for the bus (held by the writer). If it waited holding the GIL,
    # the writer could never take the GIL back to finish its recompute: a deadlock.
    t0 = time.perf_counter()
    print(out.read())
    writer.join()
    print("waited", round(time.perf_counter() - t0, 1) >= 0.1)
    bus.close()
    """
)


def test_a_thread_waiting_for_the_bus_does_not_hold_the_gil(run_python, tmp_path: Path):
    cp = run_python(WAITER_HOLDS_NO_GIL, str(tmp_path / "bus"), timeout=30)
    assert cp.returncode == 0, cp.stderr
    assert cp.stdout == "b'slow\\x00\\x00\\x00\\x00'\nwaited True\n", cp.stdout + cp.stderr


def test_close_from_a_recompute_function_raises_instead_of_deadlocking(bus):
    doc, out = bus.create_page(8), bus.create_page(8)
    bus.add_dependency(doc, out)

    def f(parents):
        bus.close()

    bus.register_recompute(out, f)
    with pytest.raises(mmsb.MmsbError, match="recompute function cannot call into its bus"):
        doc.write_range(0, b"x")
    assert not bus.closed


def test_a_replica_directory_is_refused_as_a_writer_with_is_replica_error(tmp_path):
    d = tmp_path / "bus"
    b = mmsb.Bus.start(str(d))
    b.create_page(16)
    b.close()
    # The marker file is what makes a directory a replica (mmsb::replica::MARKER).
    (d / "REPLICA").write_text("replica\n")
    with pytest.raises(mmsb.IsReplicaError) as e:
        mmsb.Bus.start(str(d))
    assert e.value.dir == str(d)
    assert isinstance(e.value, mmsb.MmsbError)
