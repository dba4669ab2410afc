"""Real files between real processes through DataHub blocks: Python to Python, Rust
``datahub pub`` to Python, Python to Rust ``datahub sub``; digests checked on both ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import memsys.datahub as dh

from filestream import SCHEMA, digest, receive_files, send_files

TESTS = Path(__file__).resolve().parent


def shared_files(shared_data: Path) -> list[Path]:
    files = sorted(p for p in shared_data.rglob("*") if p.is_file())
    assert len(files) >= 5, f"expected the shared data set, found {files}"
    assert len({p.name for p in files}) == len(files), "base names must be distinct"
    return files


def expected(files: list[Path]) -> dict[str, bytes]:
    return {p.name: digest(p.read_bytes()) for p in files}


PRODUCER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from pathlib import Path
    import memsys.datahub as dh
    from filestream import SCHEMA, send_files
    name, paths = sys.argv[2], [Path(p) for p in sys.argv[3:]]
    p = dh.Producer(name, "sequential", slot_size=65536, slot_count=16,
                    checksum="enforced", schema=SCHEMA)
    print("ready", flush=True)
    p.wait_for_consumers(1, timeout=30)
    send_files(p, paths, stream=42)
    p.close()
    p.wait_drained(timeout=30)
    """
)


def test_a_python_producer_and_a_python_consumer_in_two_processes_move_every_shared_file_intact(
    shared_data, block_name
):
    files = shared_files(shared_data)
    child = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, str(TESTS), block_name, *map(str, files)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "ready", child.stderr.read()
        c = dh.Consumer.attach(block_name, schema=SCHEMA, policy="sequential", timeout=10)
        got = receive_files(c, timeout=30)
        assert child.wait(timeout=60) == 0, child.stderr.read()
    finally:
        child.kill()
        child.wait()
    assert {n: digest(d) for n, d in got.items()} == expected(files)
    m = c.metrics()
    assert m["checksums_verified"] >= m["slots_read"] > len(files)


def test_rust_datahub_pub_to_a_python_consumer_moves_every_shared_file_intact(
    shared_data, block_name, rust_bin
):
    files = shared_files(shared_data)
    pub = subprocess.Popen(
        [str(rust_bin("datahub")), "pub", block_name, *map(str, files), "--wait", "30"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        c = dh.Consumer.attach(block_name, schema=SCHEMA, timeout=30)
        got = receive_files(c, timeout=30)
        out, err = pub.communicate(timeout=60)
        assert pub.returncode == 0, err
    finally:
        pub.kill()
        pub.wait()
    assert {n: digest(d) for n, d in got.items()} == expected(files)


def test_a_python_producer_to_rust_datahub_sub_moves_every_shared_file_intact(
    shared_data, block_name, rust_bin, tmp_path
):
    files = shared_files(shared_data)
    out_dir = tmp_path / "out"
    p = dh.Producer(
        block_name, "sequential", slot_size=65536, slot_count=16, checksum="enforced",
        schema=SCHEMA,
    )
    sub = subprocess.Popen(
        [str(rust_bin("datahub")), "sub", block_name, "--out", str(out_dir), "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        p.wait_for_consumers(1, timeout=30)
        send_files(p, files, stream=7)
        p.close()
        p.wait_drained(timeout=30)
        out, err = sub.communicate(timeout=60)
        assert sub.returncode == 0, err
    finally:
        sub.kill()
        sub.wait()
    summary = json.loads(out)
    assert summary, "sub printed an empty summary"
    got = {f.name: digest(f.read_bytes()) for f in out_dir.iterdir() if f.is_file()}
    assert got == expected(files)
