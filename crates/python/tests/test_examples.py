"""The examples the README shows run, and type-check against the stubs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PACKAGE = Path(__file__).resolve().parents[1] / "python"


def test_the_producer_and_consumer_examples_move_every_frame_between_two_processes(block_name):
    prod = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "producer.py"), block_name, "50"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        cons = subprocess.run(
            [sys.executable, str(EXAMPLES / "consumer.py"), block_name],
            capture_output=True,
            text=True,
            timeout=60,
        )
        out, err = prod.communicate(timeout=60)
    finally:
        prod.kill()
        prod.wait()
    assert cons.returncode == 0, cons.stderr
    assert cons.stdout.strip() == "received 50 frames, last seq 49"
    assert prod.returncode == 0 and out.strip() == "sent 50 frames", err


def test_the_mmsb_example_counts_words_and_replays_the_past(tmp_path):
    cp = subprocess.run(
        [sys.executable, str(EXAMPLES / "mmsb_wordcount.py"), str(tmp_path / "log")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cp.returncode == 0, cp.stderr
    lines = cp.stdout.splitlines()
    assert lines[0] == "words now: 9"
    assert lines[1].endswith(": 4")


def test_the_stubs_and_examples_pass_mypy_strict(tmp_path):
    from mypy import api  # installed by scripts/python-tests.sh; missing: the test fails
    out, err, status = api.run(
        [
            "--strict",
            "--no-incremental",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--python-version",
            "3.11",
            "--ignore-missing-imports",
            *map(str, sorted(EXAMPLES.glob("*.py"))),
        ]
    )
    assert status == 0, out + err
