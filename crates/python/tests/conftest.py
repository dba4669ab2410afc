"""Fixtures shared by the memsys tests.

- ``shared_data``: the real input folder (``$SHARED_DATA_DIR``, else ``../shared/data`` beside
  the workspace). Missing: the test is skipped, or fails when ``REQUIRE_SHARED_DATA=1`` (CI).
- ``rust_bin``: path of a workspace binary (``$MEMSYS_BIN_DIR``, default ``target/debug``;
  ``scripts/python-tests.sh`` builds them). A missing binary fails the test.
- ``block_name``: a fresh DataHub block name, its segment removed after the test.
- ``run_python``: runs code in a new interpreter (a crash there fails the test, not the suite).
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
_counter = itertools.count()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    env = os.environ.get("SHARED_DATA_DIR")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    if not path.is_dir():
        if os.environ.get("REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"REQUIRE_SHARED_DATA=1 but {path} is not a directory")
        pytest.skip(f"shared data not found at {path}")
    return path


@pytest.fixture(scope="session")
def bin_dir() -> Path:
    return Path(os.environ.get("MEMSYS_BIN_DIR", REPO / "target" / "debug"))


@pytest.fixture
def rust_bin(bin_dir: Path):
    def find(name: str) -> Path:
        p = bin_dir / name
        if not p.is_file():
            pytest.fail(f"{p} is missing: build it (scripts/python-tests.sh does)")
        return p

    return find


def shm_dir() -> Path:
    return Path(os.environ.get("DATAHUB_SHM_DIR", "/dev/shm"))


@pytest.fixture
def block_name():
    name = f"pytest-{os.getpid()}-{next(_counter)}"
    yield name
    for p in shm_dir().glob(f"{name}*"):
        try:
            p.unlink()
        except OSError:
            pass


@pytest.fixture
def run_python():
    def run(code: str, *args: str, timeout: float = 60.0, check: bool = False):
        cp = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and cp.returncode != 0:
            raise AssertionError(
                f"child exited {cp.returncode}\nstdout:\n{cp.stdout}\nstderr:\n{cp.stderr}"
            )
        return cp

    return run
