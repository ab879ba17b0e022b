#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for a fixed number of inputs
# (default 20000 each) and fails on the first crash, leak or assertion.
#
#   scripts/fuzz.sh [--or-skip] [RUNS]
#
# Installs what is missing: a nightly toolchain (rustup, minimal profile) and
# cargo-fuzz (`cargo install --locked`). Without them it fails, or, with
# --or-skip (CI), prints "SKIPPED: fuzzing ..." with the reason and exits 0.
# Each target starts from its committed seeds (fuzz/seeds/TARGET, if any) and
# writes what it finds to a scratch corpus that is thrown away; a crashing
# input is kept in fuzz/artifacts/TARGET/ (reproduce with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

or_skip=0
if [ "${1:-}" = "--or-skip" ]; then
  or_skip=1
  shift
fi
runs="${1:-20000}"
case "$runs" in
  '' | *[!0-9]*) echo "usage: scripts/fuzz.sh [--or-skip] [RUNS]" >&2; exit 2 ;;
esac

# A tool is missing and cannot be installed: fail, or skip plainly.
missing() {
  if [ "$or_skip" = 1 ]; then
    echo "SKIPPED: fuzzing (no target was run): $1"
    exit 0
  fi
  echo "error: $1" >&2
  exit 1
}

# target:max_len. Request lines: the daemon's limit is 64 KiB, but 4 KiB
# holds every op with room to nest; sync frames: a few frames of real
# requests (the 512 KiB frame limit is checked on the 4-byte header alone).
targets=(decode_frames:16384 socket_request:4096 sync_frame:16384)

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "== installing the nightly toolchain (rustup, minimal profile)"
  if ! rustup toolchain install nightly --profile minimal; then
    missing "cannot install a nightly toolchain (cargo-fuzz needs one); is rustup's distribution server reachable?"
  fi
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  if ! cargo install cargo-fuzz --locked; then
    missing "cannot install cargo-fuzz (cargo install cargo-fuzz --locked failed)"
  fi
fi
echo "== $(cargo +nightly --version); $(cargo fuzz --version)"

scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

cd fuzz
echo "== building the fuzz targets"
cargo +nightly fuzz build

for entry in "${targets[@]}"; do
  target="${entry%%:*}"
  max_len="${entry##*:}"
  corpus=("$scratch/$target")
  mkdir -p "${corpus[0]}"
  [ -d "seeds/$target" ] && corpus+=("seeds/$target")
  echo "== fuzzing $target: $runs inputs, at most $max_len bytes each"
  t0=$(date +%s)
  if ! cargo +nightly fuzz run "$target" "${corpus[@]}" -- \
    -runs="$runs" -max_len="$max_len" -seed=1 -print_final_stats=1 2>"$scratch/$target.log"; then
    # The panic message first (the tail is mostly libFuzzer's stack).
    grep -m 3 -A 2 "panicked at" "$scratch/$target.log" >&2 || true
    tail -n 40 "$scratch/$target.log" >&2
    echo "error: fuzz target $target failed; the input is in fuzz/artifacts/$target/" >&2
    exit 1
  fi
  grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb)' "$scratch/$target.log" || true
  echo "   $target: no crash in $(( $(date +%s) - t0 )) s"
done
