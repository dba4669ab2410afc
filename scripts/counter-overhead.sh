#!/usr/bin/env bash
# What the stats counters cost the allocation fast path: the same loop of alloc_ptr/free_ptr
# pairs (crates/temporal-slab/examples/fast_path_loop.rs) built with the default feature
# `fast-path-counters` and without it, run alternately ROUNDS times; prints the best ns per pair
# of each and the overhead. With valgrind installed it also prints instructions per pair
# (callgrind, repeatable whatever the machine's load).
#
#   scripts/counter-overhead.sh [PAIRS=30000000] [ROUNDS=7]
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${1:-30000000}
rounds=${2:-7}
out=target/counter-overhead
mkdir -p "$out"
cargo build -q --release -p temporal-slab --example fast_path_loop
cp target/release/examples/fast_path_loop "$out/with"
cargo build -q --release -p temporal-slab --example fast_path_loop --no-default-features
cp target/release/examples/fast_path_loop "$out/without"

best() { sort -n | head -1; }
: > "$out/with.ns"; : > "$out/without.ns"
for _ in $(seq "$rounds"); do
  for v in with without; do
    s=$(date +%s%N); "$out/$v" "$pairs" > /dev/null; e=$(date +%s%N)
    awk -v ns=$((e - s)) -v n="$pairs" 'BEGIN { printf "%.3f\n", ns / n }' >> "$out/$v.ns"
  done
done
w=$(best < "$out/with.ns"); wo=$(best < "$out/without.ns")
echo "ns per alloc+free pair (best of $rounds x $pairs): with counters $w, without $wo"
awk -v w="$w" -v wo="$wo" 'BEGIN { printf "overhead: %+.1f%%\n", (w - wo) * 100 / wo }'

if command -v valgrind > /dev/null; then
  for v in with without; do
    a=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$out/$v" 1000000 2>&1 | awk '/refs:/ {gsub(",", "", $NF); print $NF}')
    b=$(valgrind --tool=callgrind --callgrind-out-file=/dev/null "$out/$v" 2000000 2>&1 | awk '/refs:/ {gsub(",", "", $NF); print $NF}')
    echo "instructions per pair, $v counters: $(( (b - a) / 1000000 ))"
  done
fi
