#!/usr/bin/env bash
# Checks that every re-exec entry point of the integration tests (a `child_*` test function the
# parent test runs in a new process of its own test binary) is `#[ignore]`d, so a plain test run
# neither runs it (it would pass trivially) nor counts it as a test. Parents spawn them with
# `--exact --ignored NAME`.
#
#   scripts/check-test-entry-points.sh            # crates/*/tests/**/*.rs
#   scripts/check-test-entry-points.sh FILE...    # these files
#
# Exit: 0 every entry point is ignored, 1 one is not (each is named), 2 bad input.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$#" -eq 0 ]; then
  mapfile -t files < <(find "$repo"/crates/*/tests -name '*.rs' -type f | sort)
else
  files=("$@")
fi
[ "${#files[@]}" -gt 0 ] || { echo "entry-points: no test files" >&2; exit 2; }

bad=0 seen=0
for f in "${files[@]}"; do
  [ -f "$f" ] && [ ! -L "$f" ] || { echo "entry-points: $f is not a regular file" >&2; exit 2; }
  # The attribute lines (and doc comments) directly above each `fn child_*` must include
  # `#[ignore`.
  out="$(awk -v file="$f" '
    /^[ \t]*(#\[|\/\/\/)/ { attrs = attrs $0 "\n"; next }
    /^[ \t]*(pub )?fn child_[A-Za-z0-9_]*\(/ {
      name = $0; sub(/^[ \t]*(pub )?fn /, "", name); sub(/\(.*/, "", name)
      if (attrs ~ /#\[test\]/) {
        printf "SEEN\n"
        if (attrs !~ /#\[ignore/) printf "%s: %s is a test but not #[ignore]d\n", file, name
      }
    }
    { attrs = "" }
  ' "$f")"
  seen=$((seen + $(grep -c '^SEEN' <<<"$out")))
  if grep -v '^SEEN' <<<"$out" | grep -q .; then
    grep -v '^SEEN' <<<"$out"
    bad=1
  fi
done
if [ "$bad" -ne 0 ]; then
  echo "entry-points: a re-exec entry point would be counted as a passing test; add #[ignore = \"re-exec entry point ...\"] and spawn it with --exact --ignored"
  exit 1
fi
echo "entry-points: $seen re-exec entry points, all #[ignore]d"
