"""MMSB from Python: a document page, a derived word-count page kept by a Python function,
every change in a checksummed write-ahead log, and a replay of the past.

    python mmsb_wordcount.py LOG_DIR
"""

import sys

import memsys.mmsb as mmsb

with mmsb.Bus.start(sys.argv[1], durability="fsync") as bus:
    doc = bus.create_page(4096)
    count = bus.create_page(8)
    bus.add_dependency(doc, count)
    # Runs after each commit that changes `doc`, over a read-only view of its bytes.
    bus.register_recompute(
        count,
        lambda parents: len(bytes(parents[0]).rstrip(b"\0").split()).to_bytes(8, "little"),
    )
    doc.write_range(0, b"the quick brown fox")
    first = bus.last_lsn
    with bus.batch() as batch:  # one commit; an exception inside applies nothing
        batch.write_range(doc, 19, b" jumps over the lazy dog")
    print("words now:", int.from_bytes(count.read(), "little"))
    then = bus.replay_to(lsn=first)  # a detached state: the live bus is untouched
    print("words at LSN", first, ":", int.from_bytes(then.page(count.id).read(), "little"))
    print("deltas logged:", bus.stats()["deltas"])
