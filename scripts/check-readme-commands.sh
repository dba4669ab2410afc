#!/usr/bin/env bash
# Runs every shell command README.md shows, so the README cannot name a command that fails.
#
#   scripts/check-readme-commands.sh [FILE]     # FILE defaults to README.md
#   scripts/check-readme-commands.sh --self-test  # shows the check failing on a broken command
#
# Convention (in the README):
# - Commands are in fenced blocks opened with ```sh; each line is one command (a line ending in
#   `\` continues on the next). ```text, ```rust, ```yaml blocks are not run.
# - A ```sh block whose previous non-blank line is `<!-- readme-check: skip (reason) -->` is not
#   run (a long run, a second shell, a full benchmark); the reason is printed.
# - Blocks run in order, in one scratch directory under the workspace's target/ (so `cargo run
#   -p X` finds the workspace and relative outputs such as `snap.json` land there, not in the
#   checkout), each command under `timeout` (README_CHECK_TIMEOUT seconds, default 300) with
#   `set -o pipefail`. A later block may use a file an earlier one wrote.
# - `$SHARED_DATA_DIR` is the shared data set (default: `../shared/data` beside the workspace,
#   as the tests use it).
# Run after the workspace is built: the release binaries are built once up front, so the
# timeout measures the command, not the compiler.
#
# Exit: 0 every command succeeded, 1 a command failed or timed out, 2 bad input.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"

if [ "${1:-}" = "--self-test" ]; then
  # readme_check_catches_a_broken_command: a README with one good and one broken command must
  # make the check exit 1 and name the broken one; a skipped broken command must not.
  t="$(mktemp -d)"
  trap 'rm -rf "$t"' EXIT
  printf '# t\n\n```sh\ntrue\ncargo --version\n```\n\n<!-- readme-check: skip (not run) -->\n```sh\nfalse\n```\n' > "$t/ok.md"
  printf '# t\n\n```sh\ncargo --version\ncargo run --release -p tslab -- no-such-command\n```\n' > "$t/bad.md"
  README_CHECK_NO_BUILD=1 "$0" "$t/ok.md" > "$t/ok.out" 2>&1
  ok=$?
  README_CHECK_NO_BUILD=1 "$0" "$t/bad.md" > "$t/bad.out" 2>&1
  bad=$?
  if [ "$ok" -ne 0 ]; then
    echo "readme-check self-test: a good README failed (exit $ok):"; cat "$t/ok.out"; exit 1
  fi
  if [ "$bad" -ne 1 ] || ! grep -q 'failed.*no-such-command' "$t/bad.out"; then
    echo "readme-check self-test: a broken command was not caught (exit $bad):"; cat "$t/bad.out"; exit 1
  fi
  echo "readme-check self-test: ok (a broken command fails the check with exit 1)"
  exit 0
fi

file="${1:-$repo/README.md}"
if [ ! -f "$file" ] || [ -L "$file" ]; then
  echo "readme-check: $file is not a regular file" >&2
  exit 2
fi
timeout_s="${README_CHECK_TIMEOUT:-300}"
export SHARED_DATA_DIR="${SHARED_DATA_DIR:-$repo/../shared/data}"

# Extract the commands: one "RUN<TAB>line<TAB>command" or "SKIP<TAB>line<TAB>reason" per entry.
cmds="$(awk '
  BEGIN { inblock = 0; skip = 0 }
  /^```/ {
    if (!inblock) {
      inblock = 1; run = ($0 ~ /^```sh[ \t]*$/); skipthis = skip; start = NR
      if (run && skipthis) printf "SKIP\t%d\t%s\n", NR, reason
      cont = ""; next
    } else {
      if (cont != "") { print "UNTERMINATED\t" start; exit }
      inblock = 0; skip = 0; next
    }
  }
  inblock {
    if (!run || skipthis) next
    line = $0
    if (cont == "") cline = NR
    if (line ~ /\\$/) { sub(/\\$/, "", line); cont = cont line; next }
    cmd = cont line; cont = ""
    if (cmd ~ /^[ \t]*$/) next
    printf "RUN\t%d\t%s\n", cline, cmd
    next
  }
  /^[ \t]*$/ { next }
  /^<!-- readme-check: skip/ { skip = 1; reason = $0; sub(/^<!-- readme-check: skip */, "", reason); sub(/ *-->.*$/, "", reason); next }
  { skip = 0 }
  END { if (inblock) print "UNTERMINATED\t" start }
' "$file")"
if grep -q '^UNTERMINATED' <<<"$cmds"; then
  echo "readme-check: $file: unterminated code fence at line $(grep '^UNTERMINATED' <<<"$cmds" | cut -f2)" >&2
  exit 2
fi
if ! grep -q '^RUN' <<<"$cmds"; then
  echo "readme-check: $file: no \`\`\`sh command to run" >&2
  exit 2
fi

cd "$repo" || exit 2
if [ -z "${README_CHECK_NO_BUILD:-}" ]; then
  echo "== readme-check: building the release binaries the README runs"
  # One package at a time, as `cargo run -p X` builds it: several `-p` in one build unify
  # their features into a set no single `cargo run` uses, so every command would build again.
  for p in bench tslab datahub-cli mmsb-cli; do
    cargo build --release -p "$p" || exit 1
  done
fi
mkdir -p "$repo/target"
scratch="$(mktemp -d "$repo/target/readme-check.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
cd "$scratch" || exit 2

ran=0 skipped=0 failed=0
while IFS=$'\t' read -r kind line rest; do
  case "$kind" in
    SKIP)
      echo "-- skip (README line $line): ${rest:-no reason given}"
      skipped=$((skipped + 1)) ;;
    RUN)
      echo "-- run (README line $line): $rest"
      timeout --kill-after=10 "$timeout_s" bash -o pipefail -c "$rest" </dev/null > "$scratch/.out" 2>&1
      rc=$?
      ran=$((ran + 1))
      if [ "$rc" -ne 0 ]; then
        failed=$((failed + 1))
        what="exit $rc"
        [ "$rc" -eq 124 ] && what="timed out after ${timeout_s}s"
        echo "readme-check: README line $line failed ($what): $rest"
        tail -n 15 "$scratch/.out" | sed 's/^/    | /'
      fi ;;
  esac
done <<<"$cmds"

echo "readme-check: $ran commands run, $failed failed, $skipped blocks skipped"
[ "$failed" -eq 0 ] || exit 1
exit 0
