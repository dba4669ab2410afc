"""Discovery through a real ``datahub broker``, metrics, and Admin diagnose/recover."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time

import pytest

import memsys.datahub as dh


@pytest.fixture
def broker(rust_bin, tmp_path):
    sock = tmp_path / "broker.sock"
    ep = f"ipc://{sock}"
    proc = subprocess.Popen(
        [str(rust_bin("datahub")), "broker", "--listen", ep],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    end = time.monotonic() + 10
    while not sock.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < end, "the broker's socket did not appear"
        time.sleep(0.02)
    yield ep
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def test_a_consumer_discovers_a_registered_python_producer_through_the_broker(
    broker, block_name
):
    schema = dh.Schema.from_fields([("v", "u64", 0, 1)], 8, 8)
    p = dh.Producer(block_name, "sequential", slot_size=64, schema=schema)
    reg = p.register(dh.Broker(broker, role="py-producer"), "py.chan", schema_id="test.u64")
    assert reg["block_name"] == block_name
    c = dh.Consumer.discover("py.chan", dh.Broker(broker, role="py-consumer"), schema=schema)
    assert c.name == block_name
    for i in range(5):
        p.send(i.to_bytes(8, "little"), timeout=1)
    got = [int.from_bytes(c.recv(timeout=1)[1], "little") for _ in range(5)]
    assert got == list(range(5))
    channels = dh.Broker(broker).channels()
    assert [ch["channel_name"] for ch in channels] == ["py.chan"]
    with pytest.raises(dh.BrokerRefused) as info:
        dh.Consumer.discover(
            "py.chan", dh.Broker(broker), schema=dh.Schema.named("other"), timeout=2
        )
    assert info.value.error_code == "SCHEMA_MISMATCH"


def test_metrics_count_what_was_written_and_read(block_name):
    p = dh.Producer(block_name, slot_size=256, slot_count=4)
    c = dh.Consumer.attach(block_name)
    for i in range(3):
        p.send(b"z" * (10 + i), timeout=1)
        c.recv(timeout=1)
    m = p.metrics()
    assert (m["slots_written"], m["bytes_written"]) == (3, 33)
    assert (m["slots_read"], m["bytes_read"]) == (3, 33)
    assert c.metrics()["consumers"] == 1
    info = c.info()
    assert info["slot_size"] == 256 and info["slot_count"] == 4


DIES_HOLDING = textwrap.dedent(
    """
    import os, sys, signal
    import memsys.datahub as dh
    p = dh.Producer(sys.argv[1], slot_size=64, slot_count=2, unlink_on_drop=False)
    s = p.write(timeout=1)
    print("holding", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_admin_diagnoses_a_producer_killed_holding_a_slot_and_recovers_it(block_name):
    cp = subprocess.run(
        [sys.executable, "-c", DIES_HOLDING, block_name], capture_output=True, text=True
    )
    assert cp.returncode == -signal.SIGKILL and cp.stdout.strip() == "holding"
    a = dh.Admin(block_name)
    d = a.diagnose()
    assert d["problems"], d
    writing = [s for s in d["slots"] if s["state"] == "writing"]
    assert len(writing) == 1 and writing[0]["writer_dead"], d["slots"]
    planned = a.recover(dry_run=True)
    assert planned, f"nothing to recover in {d}"
    states = [s["state"] for s in a.diagnose()["slots"]]
    assert states == [s["state"] for s in d["slots"]], "a dry run changed the block"
    done = a.recover(dry_run=False)
    assert [x["action"] for x in done] == [x["action"] for x in planned]
    assert all(s["state"] != "writing" for s in a.diagnose()["slots"])
    assert a.validate()["ok"]
    a.remove()
    assert block_name not in dh.list_blocks()
