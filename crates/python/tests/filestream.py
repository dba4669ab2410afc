"""The file stream of ``datahub pub``/``datahub sub``, written in Python from its documentation
(crates/datahub-cli/src/frame.rs): each file is FILE_START, DATA..., FILE_END with the
BLAKE2b-256 of the whole file, and the producer's ``close()`` ends the stream.

Message layout (little-endian): kind u8, 3 zero bytes, file index u32, stream id u64, value
u64, then the body. Used by the tests to move real files between Python and Rust processes.
"""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import memsys.datahub as dh

SCHEMA_TEXT = (
    "datahub-cli file stream: FILE_START/DATA/FILE_END/ABORT, 24-byte header (kind, index, "
    "stream, value), BLAKE2b-256 file digests"
)
SCHEMA = dh.Schema.named(SCHEMA_TEXT, 1)
HEADER = struct.Struct("<B3xIQQ")
FILE_START, DATA, FILE_END, ABORT = 1, 2, 3, 4


def digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


def put(slot, kind: int, index: int, stream: int, value: int, body) -> int:
    """Writes one message into a claimed slot, in place, and commits it."""
    n = HEADER.size + len(body)
    with memoryview(slot) as mv:
        HEADER.pack_into(mv, 0, kind, index, stream, value)
        mv[HEADER.size:n] = body
    return slot.commit(n)


def send_files(producer: dh.Producer, paths: list[Path], stream: int, timeout: float = 30.0):
    """Sends every file through `producer`, writing each chunk straight into its slot."""
    room = producer.slot_size - HEADER.size
    for index, path in enumerate(paths):
        data = path.read_bytes()
        with producer.write(timeout) as s:
            put(s, FILE_START, index, stream, len(data), path.name.encode())
        for off in range(0, len(data), room):
            with producer.write(timeout) as s:
                put(s, DATA, index, stream, off, data[off:off + room])
        with producer.write(timeout) as s:
            put(s, FILE_END, index, stream, len(data), digest(data))


def receive_files(consumer: dh.Consumer, timeout: float = 30.0) -> dict[str, bytes]:
    """Reads a whole stream; checks every invariant the documentation lists and returns
    {name: content}. Raises AssertionError on a broken stream."""
    files: dict[str, bytes] = {}
    stream = None
    cur = None  # (index, name, bytearray)
    expect_index = 0
    for slot in consumer.slots(timeout):
        with memoryview(slot) as mv:
            kind, index, sid, value = HEADER.unpack_from(mv, 0)
            body = bytes(mv[HEADER.size:])
        assert stream in (None, sid), f"stream id changed: {stream} then {sid}"
        stream = sid
        if kind == FILE_START:
            assert cur is None and index == expect_index, (kind, index)
            cur = (index, body.decode(), bytearray())
        elif kind == DATA:
            assert cur is not None and index == cur[0] and value == len(cur[2]), (index, value)
            cur[2].extend(body)
        elif kind == FILE_END:
            assert cur is not None and index == cur[0], index
            assert value == len(cur[2]), f"{cur[1]}: length {value} != {len(cur[2])}"
            assert body == digest(bytes(cur[2])), f"{cur[1]}: digest mismatch"
            files[cur[1]] = bytes(cur[2])
            cur, expect_index = None, expect_index + 1
        elif kind == ABORT:
            raise AssertionError(f"producer aborted: {body.decode(errors='replace')}")
        else:
            raise AssertionError(f"unknown kind {kind}")
    assert cur is None, "stream ended inside a file"
    return files
