"""The Python side of ``bench python``: the cost of one DataHub write/commit and one read
from Python, in the loop shape the Rust side of the same run uses.

    python roundtrip.py BLOCK_PREFIX N SIZE [SIZE...]

For each SIZE (payload bytes): a Sequential block of 64 slots of SIZE bytes and a consumer in
this process; N messages in phases of 64: write 64 (each: claim a slot, copy the payload into
it through a memoryview, commit SIZE bytes), then read 64 (each: take the slot, touch its last
byte through a memoryview, release it). Each phase is timed with perf_counter_ns; ns/op =
phase time / 64, summed over phases. The same again with the copying shortcuts ``send`` and
``recv``. Warm-up: one phase of each, not timed. Prints one JSON object.
"""

from __future__ import annotations

import json
import platform
import sys
import time

import memsys.datahub as dh

K = 64


def measure(prefix: str, n: int, size: int) -> dict:
    name = f"{prefix}-{size}"
    p = dh.Producer(name, "sequential", slot_size=size, slot_count=K)
    c = dh.Consumer.attach(name)
    payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
    phases = max(1, n // K)
    t_write = t_read = t_send = t_recv = 0
    perf = time.perf_counter_ns
    for phase in range(phases + 1):
        t0 = perf()
        for _ in range(K):
            with p.write(1.0) as s:
                with memoryview(s) as mv:
                    mv[:size] = payload
                s.commit(size)
        t1 = perf()
        for _ in range(K):
            with c.read(1.0) as r:
                with memoryview(r) as mv:
                    if mv[size - 1] != payload[-1]:
                        raise SystemExit("wrong byte read")
        t2 = perf()
        for _ in range(K):
            p.send(payload, 1.0)
        t3 = perf()
        for _ in range(K):
            _, data = c.recv(1.0)
            if len(data) != size:
                raise SystemExit("wrong length read")
        t4 = perf()
        if phase:  # phase 0 is the warm-up
            t_write += t1 - t0
            t_read += t2 - t1
            t_send += t3 - t2
            t_recv += t4 - t3
    ops = phases * K
    del c, p
    return {
        "size": size,
        "messages": ops,
        "write_commit_ns": t_write / ops,
        "read_release_ns": t_read / ops,
        "send_ns": t_send / ops,
        "recv_ns": t_recv / ops,
    }


def main() -> None:
    prefix, n, sizes = sys.argv[1], int(sys.argv[2]), [int(s) for s in sys.argv[3:]]
    out = {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "results": [measure(prefix, n, s) for s in sizes],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
