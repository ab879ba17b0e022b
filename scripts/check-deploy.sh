#!/usr/bin/env bash
# Checks the operator files in deploy/ with their own tools.
#
# systemd units (deploy/systemd/*.service): `systemd-analyze verify`, with the
# workspace's built binaries (target/debug, or $OMEGA_BIN_DIR) standing in for
# /usr/local/bin, since verify checks that ExecStart is executable. Any
# warning (an unknown key, a bad value) fails the check: verify itself exits
# 0 on those. Installs Debian's systemd package where systemd-analyze is
# missing. Run after a build (CI runs it after the tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${OMEGA_BIN_DIR:-$PWD/target/debug}"
for b in omega-node omega-braind; do
  if [ ! -x "$bin/$b" ]; then
    echo "check-deploy: $bin/$b is missing: build first (cargo build -p omega-node -p omega-brain-daemon)" >&2
    exit 1
  fi
done

if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "check-deploy: installing systemd (for systemd-analyze)"
  apt-get update -qq && apt-get install -y -qq systemd
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in deploy/systemd/*.service; do
  sed "s#/usr/local/bin/#$bin/#g" "$unit" > "$tmp/$(basename "$unit")"
done
if ! out=$(systemd-analyze verify "$tmp"/*.service 2>&1); then
  echo "$out" >&2
  echo "check-deploy: systemd-analyze verify failed" >&2
  exit 1
fi
if [ -n "$out" ]; then
  echo "$out" >&2
  echo "check-deploy: systemd-analyze verify warned (above)" >&2
  exit 1
fi
echo "check-deploy: systemd units verified: $(cd deploy/systemd && echo *.service)"
