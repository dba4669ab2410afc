"""Every typed error a test can provoke arrives as its own exception class, with its code."""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np
import pytest

import memsys
import memsys.datahub as dh

SHM = Path(os.environ.get("DATAHUB_SHM_DIR", "/dev/shm"))


def not_found(name):
    dh.Consumer.attach(name)


def invalid_name(name):
    dh.Producer("a/b")


def already_exists(name):
    p = dh.Producer(name)  # noqa: F841
    dh.Producer(name)


def timeout(name):
    p = dh.Producer(name)  # noqa: F841
    dh.Consumer.attach(name).read(timeout=0.01)


def payload_too_large(name):
    p = dh.Producer(name, slot_size=64)
    p.send(b"x" * 65, timeout=1)


def schema_mismatch(name):
    p = dh.Producer(name, schema=dh.Schema.named("a"))  # noqa: F841
    dh.Consumer.attach(name, schema=dh.Schema.named("b"))


def expectation_mismatch(name):
    p = dh.Producer(name, "latest")  # noqa: F841
    dh.Consumer.attach(name, policy="sequential")


def key_mismatch(name):
    p = dh.Producer(name, checksum="enforced", checksum_key=b"k" * 32)  # noqa: F841
    dh.Consumer.attach(name, checksum_key=b"j" * 32)


def end_of_stream(name):
    p = dh.Producer(name)
    c = dh.Consumer.attach(name)
    p.close()
    c.read(timeout=1)


def closed(name):
    p = dh.Producer(name)
    p.close()
    p.write(timeout=1)


def too_many_consumers(name):
    p = dh.Producer(name, max_consumers=1)  # noqa: F841
    a = dh.Consumer.attach(name)  # noqa: F841
    dh.Consumer.attach(name)


def invalid_config(name):
    dh.Producer(name, slot_count=0)


def seq_unavailable(name):
    p = dh.Producer(name)  # noqa: F841
    dh.Consumer.attach(name).seek_to(1000)


def bad_magic(name):
    (SHM / name).write_bytes(b"\x01" * 8192)
    dh.Consumer.attach(name)


def not_ready(name):
    (SHM / name).write_bytes(b"")
    dh.Consumer.attach(name)


def not_regular(name):
    target = SHM / f"{name}-target"
    target.write_bytes(b"\0" * 4096)
    (SHM / name).symlink_to(target)
    dh.Consumer.attach(name)


def checksum_mismatch(name):
    p = dh.Producer(name, slot_size=256, checksum="enforced")
    c = dh.Consumer.attach(name)
    marker = os.urandom(64)
    p.send(marker, timeout=1)
    # Flip one byte of the committed payload behind the library's back.
    with open(SHM / name, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        at = m.find(marker)
        assert at >= 0
        m[at + 10] ^= 0xFF
    c.read(timeout=1)


def slot_in_use(name):
    p = dh.Producer(name)
    s = p.write(timeout=1)  # noqa: F841
    p.write(timeout=1)


def invalid_schema(name):
    dh.Schema.from_dtype(np.dtype([("a", "<u4"), ("b", "O")]))


def big_endian_schema(name):
    dh.Schema.from_dtype(np.dtype([("a", ">u4")]))


def broker_timeout(name):
    b = dh.Broker(f"ipc:///tmp/memsys-no-broker-{name}.sock")
    b.channels(timeout=0.2)


def broker_endpoint(name):
    dh.Broker("tcp://127.0.0.1:1")  # tcp without CURVE keys is refused


def broker_invalid_argument(name):
    dh.Broker(f"ipc:///tmp/memsys-{name}.sock", role="\x01bad")


CASES = [
    (not_found, dh.NotFound, 3),
    (invalid_name, dh.InvalidName, 2),
    (already_exists, dh.AlreadyExists, 5),
    (timeout, dh.Timeout, 15),
    (payload_too_large, dh.PayloadTooLarge, 19),
    (schema_mismatch, dh.SchemaMismatch, 12),
    (expectation_mismatch, dh.ExpectationMismatch, 13),
    (key_mismatch, dh.KeyMismatch, 14),
    (end_of_stream, dh.EndOfStream, 23),
    (closed, dh.Closed, 24),
    (too_many_consumers, dh.TooManyConsumers, 18),
    (invalid_config, dh.InvalidConfig, 11),
    (seq_unavailable, dh.SeqUnavailable, 22),
    (bad_magic, dh.BadMagic, 6),
    (not_ready, dh.NotReady, 4),
    (not_regular, dh.NotRegular, 29),
    (checksum_mismatch, dh.ChecksumMismatch, 16),
    (slot_in_use, dh.SlotInUse, 0),
    (invalid_schema, dh.InvalidSchema, 0),
    (big_endian_schema, dh.InvalidSchema, 0),
    (broker_timeout, dh.BrokerTimeout, 0),
    (broker_endpoint, dh.BrokerEndpoint, 0),
    (broker_invalid_argument, dh.BrokerInvalidArgument, 0),
]


@pytest.mark.parametrize("provoke,cls,code", CASES, ids=[c[0].__name__ for c in CASES])
def test_each_provoked_error_arrives_as_its_own_exception_class(block_name, provoke, cls, code):
    with pytest.raises(dh.DataHubError) as info:
        provoke(block_name)
    e = info.value
    assert type(e) is cls, f"{type(e).__name__}: {e}"
    assert isinstance(e, memsys.MemsysError) and not isinstance(e, RuntimeError)
    assert e.code == code
    assert str(e) and "\n" not in str(e)


def test_error_attributes_carry_the_fields_a_caller_acts_on(block_name):
    p = dh.Producer(block_name, slot_size=64)
    with pytest.raises(dh.PayloadTooLarge) as info:
        p.send(b"y" * 100, timeout=1)
    assert (info.value.len, info.value.slot_size) == (100, 64)
    with pytest.raises(dh.SchemaMismatch) as info:
        dh.Consumer.attach(block_name, schema=dh.Schema.named("other", 3))
    assert info.value.expected_version == 3 and info.value.found_version == 0
    with pytest.raises(dh.Timeout) as info:
        dh.Consumer.attach(block_name).read(timeout=0.02)
    assert info.value.op == "read" and info.value.cause == "no new message"


def test_bad_arguments_are_value_errors_not_library_errors(block_name):
    with pytest.raises(ValueError):
        dh.Producer(block_name, policy="fastest")
    with pytest.raises(ValueError):
        dh.Producer(block_name, checksum_key=b"short")
    p = dh.Producer(block_name)
    with pytest.raises(ValueError):
        p.write(timeout=-1)
