#!/usr/bin/env bash
# The project's test command (README, .ci/run): fetch the model if it is not
# there yet, then run every test of the workspace with cargo-nextest (falling
# back to cargo test where nextest is not installed). One build profile (dev,
# dependencies optimized) for the whole run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

scripts/fetch-model.sh
export OMEGA_MODEL_DIR="${OMEGA_MODEL_DIR:-$PWD/models/all-MiniLM-L6-v2}"

if [ ! -d ../shared/reference ] && [ -z "${OMEGA_SHARED_DIR:-}" ]; then
  echo "error: ../shared (reference embeddings, MovieLens) not found beside the repository; set OMEGA_SHARED_DIR" >&2
  exit 1
fi

if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
  # nextest does not run doc tests.
  cargo test --workspace --doc --quiet
else
  cargo test --workspace --no-fail-fast "$@"
fi
