"""A DataHub consumer in Python: reads the frames of producer.py without copying them.

    python consumer.py BLOCK

Waits up to 30 s for BLOCK, then reads every frame until the producer ends the stream; each
frame is a read-only numpy view of the slot, valid until the next step of the loop.
"""

import sys

import numpy as np

import memsys.datahub as dh

consumer = dh.Consumer.attach(sys.argv[1], policy="sequential", timeout=30.0)
frames = 0
for slot in consumer.slots(timeout=10.0):  # each step releases the previous slot
    frame = np.frombuffer(memoryview(slot), dtype=np.uint8)
    if frame[0] != slot.seq % 256:
        raise SystemExit(f"frame {slot.seq} holds {frame[0]}")
    frames += 1
    del frame
print(f"received {frames} frames, last seq {consumer.position - 1}")
