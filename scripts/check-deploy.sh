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
# Compose (deploy/compose): `docker-compose config` (Debian's docker-compose
# 1.29; no engine needed, none is used) validates the file, every file it
# bind-mounts from the repository must exist (the model directory aside),
# and its certs step (certs-init.sh) runs for real with the built
# omega-certs in a temporary directory, twice: each node's directory holds
# its own key and no CA key, tokens and keys are 0600 and kept across runs.
# The Dockerfile cannot be built here (no engine): its `cargo build -p`
# packages and the binaries it installs are checked against `cargo
# metadata`, its runtime user against root, .dockerignore against target/.
#
# Run after a build (CI runs it after the tests).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="${OMEGA_BIN_DIR:-$PWD/target/debug}"
for b in omega-node omega-braind omega-certs; do
  if [ ! -x "$bin/$b" ]; then
    echo "check-deploy: $bin/$b is missing: build first (cargo build -p omega-node -p omega-brain-daemon -p omega-certs)" >&2
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
need docker-compose docker-compose
need python3 python3

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

# Compose: the file, its bind mounts, its certs step.
compose=deploy/compose/docker-compose.yml
docker-compose -f "$compose" config -q
docker-compose -f "$compose" config | python3 -c '
import os, sys, yaml
missing = []
for name, svc in yaml.safe_load(sys.stdin)["services"].items():
    for volume in svc.get("volumes", []):
        source = volume.split(":")[0]
        if source.startswith("/") and "/models/" not in source and not os.path.exists(source):
            missing.append(f"{name}: {source}")
if missing:
    sys.exit("check-deploy: compose mounts missing files: " + ", ".join(missing))
'
out="$tmp/compose/out"
mkdir -p "$out/node-1" "$out/node-2" "$out/node-3" "$out/prometheus" "$out/grafana"
certs_step() {
  PATH="$bin:$PATH" OMEGA_CERTS_DIR="$tmp/compose/ca/pki" CERTS_SHARED_DIR="$tmp/compose/ca/shared" \
    CERTS_OUT_DIR="$out" sh deploy/compose/certs-init.sh > "$tmp/compose/log" 2>&1 ||
    { cat "$tmp/compose/log" >&2; echo "check-deploy: certs-init.sh failed" >&2; exit 1; }
}
certs_step
first=$(cat "$out/node-1/admin-token" "$out/node-1/federation-key")
certs_step
fail() { echo "check-deploy: certs step: $*" >&2; exit 1; }
[ "$(cat "$out/node-1/admin-token" "$out/node-1/federation-key")" = "$first" ] || fail "a second run changed node-1's secrets"
for node in node-1 node-2 node-3; do
  dir="$out/$node"
  [ -z "$(find "$dir" -name '*-ca.key' -o -name index.json)" ] || fail "$node got a CA key or the ledger"
  [ "$(cd "$dir/certs/nodes" && echo *.key)" = "$node.key" ] || fail "$node's keys: $(ls "$dir/certs/nodes")"
  for f in certs/device-ca.crt certs/device-ca.crl certs/node-ca.crt certs/node-ca.crl "certs/nodes/$node.crt"; do
    [ -s "$dir/$f" ] || fail "$node lacks $f"
  done
  for f in admin-token metrics-token federation-key "certs/nodes/$node.key"; do
    [ "$(stat -c '%a %u' "$dir/$f")" = "600 10001" ] || fail "$node/$f is $(stat -c '%a %u' "$dir/$f"), not 600 10001"
  done
  # The node reads these: a 32-hex-digit key, a token of at least 32 bytes.
  grep -Eqx '[0-9a-f]{32}' "$dir/federation-key" || fail "$node's federation key"
  [ "$(head -n1 "$dir/admin-token" | wc -c)" -ge 32 ] || fail "$node's admin token"
done
cmp -s "$out/node-1/metrics-token" "$out/prometheus/omega-metrics-token" || fail "Prometheus's token differs from the nodes'"
[ "$(stat -c '%a %u' "$out/prometheus/omega-metrics-token")" = "600 65534" ] || fail "Prometheus's token mode or owner"
[ "$(stat -c '%a %u' "$out/grafana/admin-password")" = "600 472" ] || fail "Grafana's password mode or owner"
echo "check-deploy: compose config valid, its mounts exist, its certs step exports each node only its own files"

# The Dockerfile, offline: what it builds and installs exists, it does not
# run as root, the build context leaves target/ and models/ out.
cargo metadata --no-deps --format-version 1 --offline | python3 -c '
import json, re, sys
meta = json.load(sys.stdin)
bins = {p["name"]: {t["name"] for t in p["targets"] if "bin" in t["kind"]} for p in meta["packages"]}
text = open("Dockerfile").read().replace("\\\n", " ")
errors = []
build = re.search(r"cargo build ([^&\n]*)", text)
packages = re.findall(r"-p (\S+)", build.group(1)) if build else []
if not packages:
    errors.append("no cargo build -p line")
built = set().union(*(bins.get(p, set()) for p in packages)) if packages else set()
errors += [f"-p {p}: not a workspace package" for p in packages if p not in bins]
installed = re.findall(r"target/release/(\S+)", text)
errors += [f"target/release/{b}: not a binary of {packages}" for b in installed if b not in built]
copied = re.findall(r"COPY --from=build (.*) /usr/local/bin/", text)
names = [c.rsplit("/", 1)[-1] for c in copied[0].split()] if copied else []
if not names or sorted(names) != sorted(installed):
    errors.append(f"COPY --from=build copies {names}, the build installs {installed}")
user = re.findall(r"^USER (\S+)", text, re.M)
if not user or user[-1].split(":")[0] in ("root", "0"):
    errors.append(f"the runtime USER is {user[-1] if user else None}")
ignored = open(".dockerignore").read().split()
errors += [f".dockerignore lacks {d}" for d in ("target", "models", ".git") if d not in ignored]
if errors:
    sys.exit("check-deploy: Dockerfile: " + "; ".join(errors))
print(f"check-deploy: Dockerfile builds {packages}, installs {installed} (checked offline; no engine builds it here)")
'
