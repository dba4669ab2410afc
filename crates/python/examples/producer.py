"""A DataHub producer in Python: numpy frames written straight into shared memory.

    python producer.py BLOCK [COUNT]

Creates BLOCK (Sequential: nothing is lost, the producer waits for the consumer), waits for
one consumer, then writes COUNT frames of 480x640 uint8 into the slots in place (no copy) and
ends the stream. Run consumer.py BLOCK in another shell.
"""

import sys

import numpy as np

import memsys.datahub as dh

name = sys.argv[1]
count = int(sys.argv[2]) if len(sys.argv) > 2 else 100
shape = (480, 640)
frame_bytes = shape[0] * shape[1]

with dh.Producer(name, "sequential", slot_size=frame_bytes, slot_count=8) as producer:
    producer.wait_for_consumers(1, timeout=30.0)
    for i in range(count):
        with producer.write(timeout=5.0) as slot:  # leaving the block commits the slot
            frame = np.frombuffer(memoryview(slot), dtype=np.uint8).reshape(shape)
            frame[:] = i % 256  # written in place, in the block's shared memory
            del frame  # a view must not outlive its slot: commit raises BufferError otherwise
    producer.close()  # end of stream: the consumer's loop ends after the last frame
    producer.wait_drained(timeout=30.0)
print(f"sent {count} frames")
