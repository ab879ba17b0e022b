#!/usr/bin/env bash
# Checks the operator files in deploy/ with their own tools.
#
# systemd units (deploy/systemd/*.service): `systemd-analyze verify`, with the
# workspace's built binaries (target/debug, or $OMEGA_BIN_DIR) standing in for
# /usr/local/bin, since verify checks that ExecStart is executable. Any
# warning (an unknown key, a bad value) fails the check: verify itself exits
# 0 on those. Installs Debian's systemd package where systemd-analyze is
# missing.
#
# Prometheus (deploy/prometheus): `promtool check config` (with the token
# file it names stood in by an empty one), `promtool check rules` and
# `promtool test rules alerts.test.yml` (every alert fires on the series
# that should raise it). Installs Debian's prometheus package (for promtool)
# where it is missing.
#
# Run after a build (CI runs it after the tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${OMEGA_BIN_DIR:-$PWD/target/debug}"
for b in omega-node omega-braind; do
  if [ ! -x "$bin/$b" ]; then
    echo "check-deploy: $bin/$b is missing: build first (cargo build -p omega-node -p omega-brain-daemon)" >&2
    exit 1
  fi
done

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "check-deploy: installing Debian's $2 (for $1)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2"
  fi
}
need systemd-analyze systemd
need promtool prometheus

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

mkdir "$tmp/prometheus"
cp deploy/prometheus/alerts.yml deploy/prometheus/alerts.test.yml "$tmp/prometheus/"
: > "$tmp/prometheus/token"
sed "s#credentials_file: .*#credentials_file: $tmp/prometheus/token#" \
  deploy/prometheus/prometheus.yml > "$tmp/prometheus/prometheus.yml"
(
  cd "$tmp/prometheus"
  promtool check config prometheus.yml
  promtool check rules alerts.yml
  promtool test rules alerts.test.yml
)
echo "check-deploy: prometheus config, rules and rule tests pass"
