"""Schema negotiation between a Rust typed producer and a numpy structured dtype consumer."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

import memsys.datahub as dh

# crates/datahub/examples/typed_producer.rs: #[repr(C)] struct Sample { seq: u64, t: f64,
# id: u32, temp: f32, xyz: [f32; 4] }
SAMPLE = np.dtype(
    [("seq", "<u8"), ("t", "<f8"), ("id", "<u4"), ("temp", "<f4"), ("xyz", "<f4", (4,))]
)
# The same fields with `id` and `temp` swapped: same size, another layout.
REORDERED = np.dtype(
    [("seq", "<u8"), ("t", "<f8"), ("temp", "<f4"), ("id", "<u4"), ("xyz", "<f4", (4,))]
)
COUNT = 200


@pytest.fixture
def typed_producer(rust_bin, block_name):
    p = subprocess.Popen(
        [str(rust_bin("examples/typed_producer")), block_name, str(COUNT)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = p.stdout.readline().split()
    assert line and line[0] == "ready", p.stderr.read()
    yield p, line[1]
    p.kill()
    p.wait()


def test_a_numpy_dtype_has_the_fingerprint_rust_derives_for_the_same_repr_c_layout(
    typed_producer,
):
    _, rust_fingerprint = typed_producer
    assert dh.Schema.from_dtype(SAMPLE).fingerprint == rust_fingerprint
    assert dh.Schema.from_dtype(REORDERED).fingerprint != rust_fingerprint


def test_a_dtype_consumer_attaches_to_a_rust_typed_producer_and_reads_its_values(
    typed_producer, block_name
):
    proc, _ = typed_producer
    c = dh.Consumer.attach(block_name, schema=dh.Schema.from_dtype(SAMPLE), timeout=10)
    seen = []
    for slot in c.slots(timeout=10):
        (v,) = np.frombuffer(slot, dtype=SAMPLE)
        i = int(v["seq"])
        assert (v["t"], v["id"], v["temp"]) == (i / 2, 7 * i, -i)
        assert list(v["xyz"]) == [i, 2 * i, 3 * i, 4 * i]
        seen.append(i)
        del v
    assert seen == list(range(COUNT))
    assert proc.wait(timeout=30) == 0


def test_a_reordered_field_is_refused_with_schema_mismatch(typed_producer, block_name):
    with pytest.raises(dh.SchemaMismatch):
        dh.Consumer.attach(block_name, schema=dh.Schema.from_dtype(REORDERED), timeout=10)


def test_nested_dtypes_flatten_to_dotted_names_and_from_fields_agrees():
    pos = np.dtype([("x", "<f4"), ("y", "<f4")])
    nested = np.dtype([("id", "<u8"), ("pos", pos)])
    by_hand = dh.Schema.from_fields(
        [("id", "u64", 0, 1), ("pos.x", "f32", 8, 1), ("pos.y", "f32", 12, 1)], 16, 8
    )
    assert dh.Schema.from_dtype(nested) == by_hand
    assert "pos.x" in by_hand.canonical
    assert dh.Schema.from_dtype(nested, version=2) != by_hand
