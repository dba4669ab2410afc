"""Zero-copy slots and view safety: a view is the slot's own memory, and can never outlive it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import textwrap
import threading
import time
import signal
import struct

import numpy as np
import pytest

import memsys.datahub as dh

MIB = 1 << 20


def mapping_of(name: str, address: int, size: int) -> str:
    """The /proc/self/maps line of the shared-memory mapping that holds [address, +size)."""
    for line in open("/proc/self/maps"):
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        if lo <= address and address + size <= hi:
            return line
    raise AssertionError(f"no mapping holds {address:#x}+{size}")


def test_a_numpy_view_of_a_4_mib_slot_is_the_slot_itself_in_the_blocks_mapping(block_name):
    p = dh.Producer(block_name, "sequential", slot_size=4 * MIB, slot_count=2)
    s = p.write(timeout=1)
    a = np.frombuffer(s, dtype=np.uint8)
    assert a.nbytes == s.size == 4 * MIB
    assert a.ctypes.data == s.address
    assert a.flags.writeable and not a.flags.owndata
    line = mapping_of(block_name, s.address, s.size)
    assert block_name in line, f"the view is not in the block's mapping: {line}"
    # A second view is the same memory: a write through one shows in the other.
    b = np.frombuffer(memoryview(s), dtype=np.uint8)
    a[123] = 77
    assert b[123] == 77
    del a, b
    s.abort()


CONSUMER = textwrap.dedent(
    """
    import hashlib, sys
    import memsys.datahub as dh
    c = dh.Consumer.attach(sys.argv[1], timeout=10)
    print("attached", flush=True)
    with c.read(timeout=10) as slot:
        print(slot.seq, len(slot), hashlib.blake2b(slot, digest_size=32).hexdigest(), flush=True)
    """
)


def test_writing_through_a_numpy_view_is_visible_to_a_consumer_in_another_process(block_name):
    p = dh.Producer(block_name, "sequential", slot_size=4 * MIB, slot_count=2)
    child = subprocess.Popen(
        [sys.executable, "-c", CONSUMER, block_name], stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "attached"
        with p.write(timeout=10) as s:
            a = np.frombuffer(s, dtype=np.uint32)
            a[:] = np.arange(a.size, dtype=np.uint32) * 2654435761
            want = hashlib.blake2b(a.tobytes(), digest_size=32).hexdigest()
            del a
        seq, n, got = child.stdout.readline().split()
        assert child.wait(timeout=30) == 0
    finally:
        child.kill()
        child.wait()
    assert (int(seq), int(n), got) == (0, 4 * MIB, want)


def test_commit_abort_or_leaving_the_with_while_a_view_is_alive_raise_buffererror(block_name):
    p = dh.Producer(block_name, slot_size=64, slot_count=4)
    c = dh.Consumer.attach(block_name)
    s = p.write(timeout=1)
    mv = memoryview(s)
    with pytest.raises(BufferError):
        s.commit(3)
    with pytest.raises(BufferError):
        s.abort()
    with pytest.raises(BufferError):
        s.__exit__(None, None, None)
    mv[:3] = b"abc"
    mv.release()
    assert s.commit(3) == 0
    with pytest.raises(BufferError):
        memoryview(s)  # a finished slot exports nothing
    with c.read(timeout=1) as r:
        v = memoryview(r)
        assert v.readonly and bytes(v) == b"abc"
        with pytest.raises(BufferError):
            r.release()
        arr = np.frombuffer(r, dtype=np.uint8)
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[0] = 1
        v.release()
        del arr
    assert r.released
    with pytest.raises(BufferError):
        memoryview(r)


def test_a_read_slot_refuses_a_writable_view(block_name):
    p = dh.Producer(block_name, slot_size=64, slot_count=4)
    c = dh.Consumer.attach(block_name)
    p.send(b"xyz", timeout=1)
    with c.read(timeout=1) as r:
        # pack_into asks for a writable buffer (PyBUF_WRITABLE); the slot refuses it, and
        # the argument parser reports that as a TypeError.
        with pytest.raises(TypeError, match="read-write"):
            struct.pack_into("B", r, 0, 1)
        with pytest.raises(ValueError):
            np.frombuffer(r, dtype=np.uint8).setflags(write=True)
        assert bytes(r) == b"xyz"


AFTER_WITH = textwrap.dedent(
    """
    import gc, sys
    import numpy as np
    import memsys.datahub as dh
    name = sys.argv[1]
    p = dh.Producer(name, slot_size=1 << 16, slot_count=2)
    c = dh.Consumer.attach(name)
    # 1. A view kept past the with block: leaving raises, the slot stays claimed (its memory
    #    valid), and the view still works until released.
    try:
        with p.write(timeout=1) as s:
            mv = memoryview(s)
            mv[:4] = b"keep"
    except BufferError:
        pass
    else:
        sys.exit("leaving the with with a live view did not raise")
    assert bytes(mv[:4]) == b"keep"
    mv.release()
    try:
        mv[0]
    except ValueError:
        pass  # CPython: operation forbidden on released memoryview
    else:
        sys.exit("a released memoryview was usable")
    assert s.commit(4) == 0
    # 2. A numpy array kept past the slot's release: it keeps the slot object alive and
    #    the slot held, so it never reads reused memory; the producer cannot reuse it.
    r = c.read(timeout=1)
    arr = np.frombuffer(r, dtype=np.uint8)
    try:
        r.release()
    except BufferError:
        pass
    else:
        sys.exit("releasing with a live numpy view did not raise")
    del r
    gc.collect()
    for _ in range(2):
        try:
            p.send(b"next", timeout=0.2)
        except (dh.Timeout, dh.SlotInUse):
            pass
    assert bytes(arr[:4]) == b"keep", bytes(arr[:4])
    del arr
    gc.collect()  # the last view gone: the slot is released with its object
    p.send(b"more", timeout=1)
    # 3. Iterating with a view kept from the previous step raises at the next step.
    p.close()
    it = c.slots(timeout=1)
    first = next(it)
    held = memoryview(first)
    try:
        next(it)
    except BufferError:
        pass
    else:
        sys.exit("the iterator released a slot with a live view")
    held.release()
    print("ok")
    """
)


def test_views_used_after_their_slot_ends_raise_and_never_crash_the_interpreter(
    block_name, run_python
):
    cp = run_python(AFTER_WITH, block_name, timeout=60)
    assert cp.returncode == 0 and cp.stdout.strip() == "ok", (
        f"exit {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}"
    )


def test_a_waiting_read_releases_the_gil(block_name):
    p = dh.Producer(block_name, slot_size=64, slot_count=2)  # noqa: F841 (keeps the block)
    c = dh.Consumer.attach(block_name)
    done = threading.Event()
    errors = []

    def reader():
        try:
            c.read(timeout=1.0)
        except dh.Timeout as e:
            errors.append(e)
        done.set()

    t = threading.Thread(target=reader)
    t.start()
    time.sleep(0.05)
    spins = 0
    end = time.monotonic() + 0.5
    while time.monotonic() < end:
        spins += 1
    still_waiting = not done.is_set()
    t.join()
    assert still_waiting, "the read returned early"
    assert spins > 10_000, f"the main thread ran only {spins} loops while the read waited"
    assert len(errors) == 1 and errors[0].waited_ms >= 900
    # Waited in slices, counted once, as one Rust read with the same timeout.
    assert c.metrics()["reader_timeouts"] == 1


WAIT_FOREVER = textwrap.dedent(
    """
    import sys
    import memsys.datahub as dh
    p = dh.Producer(sys.argv[1], slot_size=64, slot_count=2)
    c = dh.Consumer.attach(sys.argv[1])
    print("waiting", flush=True)
    timeout = None if sys.argv[2] == "none" else float(sys.argv[2])
    try:
        c.read(timeout=timeout)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
)


@pytest.mark.parametrize("timeout", ["none", "60"])
def test_ctrl_c_interrupts_a_waiting_read_whatever_its_timeout(block_name, timeout):
    child = subprocess.Popen(
        [sys.executable, "-c", WAIT_FOREVER, block_name, timeout],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        t0 = time.monotonic()
        child.send_signal(signal.SIGINT)
        out, _ = child.communicate(timeout=10)
        assert out.strip() == "interrupted"
        assert time.monotonic() - t0 < 2.0
        assert child.returncode == 0
    finally:
        child.kill()
        child.wait()


NO_BLOCKING = textwrap.dedent(
    """
    import sys, threading, time
    import memsys.datahub as dh
    p = dh.Producer(sys.argv[1], slot_size=64, slot_count=2)
    def waiter():
        try:
            p.wait_for_consumers(1, timeout=1.0)
        except dh.Timeout:
            pass
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.1)  # the thread now waits, GIL released, holding the producer
    t0 = time.monotonic()
    assert "Producer" in repr(p)
    try:
        p.heartbeat()
    except dh.SlotInUse:
        pass
    else:
        sys.exit("heartbeat ran while another thread held the producer")
    assert time.monotonic() - t0 < 0.5, "a call waited behind the other thread"
    t.join()
    print("ok")
    """
)


def test_repr_and_calls_never_block_behind_another_threads_wait(block_name, run_python):
    # In a child: a call that blocked under the GIL would deadlock the child, not the suite.
    cp = run_python(NO_BLOCKING, block_name, timeout=20)
    assert cp.returncode == 0 and cp.stdout.strip() == "ok", cp.stderr
