#!/usr/bin/env bash
# Checks the Helm chart deploy/helm/omega-node offline, without a cluster:
#
# 1. `helm lint` (strict) with the default values (certificates named by an
#    existing Secret, which every install needs) and with each file in
#    deploy/helm/test-values/;
# 2. `helm template` with the same values, and the ScyllaDB example
#    (deploy/helm/examples/scylla-statefulset.yaml), through
#    deploy/helm/validate: every object decoded strictly with the Kubernetes
#    Go types, then checked against omega-node's own `--help` (subcommand,
#    flags, environment variables, required flags) and its admin router's
#    source (probe paths), ports against --listen/--admin;
# 3. each rendered node.toml through `omega-node check-config`: the node's
#    own parser (unknown keys refused) and validation;
# 4. values the chart must refuse (several redb nodes, scylla without
#    contact points, no certificates) fail `helm template`.
#
# helm is built from source with `go install helm.sh/helm/v3/cmd/helm@` and
# the validator with `go build` (Go from PATH or /usr/local/go/bin; modules
# from the Go module proxy the first time), both kept under target/tools
# ($OMEGA_TOOLS_DIR). Run after a build: it uses target/debug/omega-node
# ($OMEGA_BIN_DIR), as check-deploy.sh does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

helm_version=v3.22.0
tools="${OMEGA_TOOLS_DIR:-$PWD/target/tools}"
bin="${OMEGA_BIN_DIR:-$PWD/target/debug}"
chart=deploy/helm/omega-node
node="$bin/omega-node"
if [ ! -x "$node" ]; then
  echo "check-helm: $node is missing: build first (cargo build -p omega-node)" >&2
  exit 1
fi
if command -v go >/dev/null 2>&1; then go=go; else go=/usr/local/go/bin/go; fi
if ! "$go" version >/dev/null 2>&1; then
  echo "check-helm: no Go toolchain (PATH or /usr/local/go/bin/go)" >&2
  exit 1
fi

# A helm built by `go install` reports no patch version (that comes from
# release ldflags): a marker file records which version is in $tools.
helm="$tools/bin/helm"
if [ ! -x "$helm" ] || [ "$(cat "$tools/bin/helm.version" 2>/dev/null)" != "$helm_version" ]; then
  echo "check-helm: building helm $helm_version with go install (once)"
  started=$(date +%s)
  GOBIN="$tools/bin" "$go" install "helm.sh/helm/v3/cmd/helm@$helm_version"
  echo "$helm_version" > "$tools/bin/helm.version"
  echo "check-helm: helm built in $(( $(date +%s) - started )) s"
fi
# The Kubernetes version to render for: that of the validator's k8s.io/api
# (v0.37 is Kubernetes 1.37); without it, a go-installed helm assumes 1.20.
kube=(--kube-version 1.37.0)
validate="$tools/bin/omega-helm-validate"
(cd deploy/helm/validate && GOFLAGS=-mod=readonly "$go" build -o "$validate" .)

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# Helm's own state (repositories, cache) stays out of $HOME.
export HELM_CACHE_HOME="$tmp/helm/cache" HELM_CONFIG_HOME="$tmp/helm/config" HELM_DATA_HOME="$tmp/helm/data"
"$node" --help > "$tmp/top-help.txt"
"$node" serve --help > "$tmp/serve-help.txt"

# name | helm arguments | Secrets and ConfigMaps the values name but the chart does not render
cases=(
  "default|--set certs.existingSecret=omega-node-certs|omega-node-certs"
  "redb|-f deploy/helm/test-values/redb.yaml|omega-node-certs"
  "scylla|-f deploy/helm/test-values/scylla.yaml|omega-scylla,omega-federation,omega-admin-tokens"
)
for case in "${cases[@]}"; do
  IFS='|' read -r name args external <<< "$case"
  echo "== check-helm: $name"
  # shellcheck disable=SC2086 # args are word lists
  "$helm" lint --strict "${kube[@]}" $args "$chart"
  # shellcheck disable=SC2086
  "$helm" template omega "$chart" --namespace omega "${kube[@]}" $args > "$tmp/$name.yaml"
  files=("$tmp/$name.yaml")
  if [ "$name" = scylla ]; then files+=(deploy/helm/examples/scylla-statefulset.yaml); fi
  "$validate" -top-help "$tmp/top-help.txt" -serve-help "$tmp/serve-help.txt" \
    -admin-source constellation-node/src/admin.rs -external "$external" \
    -config-out "$tmp/config-$name" "${files[@]}"
  for config in "$tmp/config-$name"/*.toml; do
    "$node" check-config --config "$config"
  done
done

echo "== check-helm: values the chart refuses"
# helm arguments | a piece of the expected message
refused=(
  "--set certs.existingSecret=c --set replicas=2|replicas must be 1"
  "--set certs.existingSecret=c --set store.kind=scylla|contactPoints is required"
  "--set certs.existingSecret=c --set store.kind=scylla --set store.scylla.contactPoints={a:9042}|replication is required"
  "--set store.kind=redb|set certs.existingSecret or certs.files"
  "--set certs.existingSecret=c --set store.kind=postgres|store.kind must be"
  "--set certs.existingSecret=c --set tokens.adminToken=short|at least 32 bytes"
  "--set certs.existingSecret=c --set regions=null|regions must not be empty"
  "-f deploy/helm/test-values/scylla.yaml --set replicas=4|has no \"omega-node-3.crt\""
  "-f deploy/helm/test-values/scylla.yaml --set cluster.heartbeatSecs=300|at most federation.intervalSecs / 3"
  "--set certs.files.node-ca\\.key=x|no CA keys"
)
for case in "${refused[@]}"; do
  IFS='|' read -r args expected <<< "$case"
  # shellcheck disable=SC2086
  if "$helm" template omega "$chart" "${kube[@]}" $args > /dev/null 2> "$tmp/refused.txt"; then
    echo "check-helm: helm template $args should have failed" >&2
    exit 1
  fi
  if ! grep -qF -- "$expected" "$tmp/refused.txt"; then
    echo "check-helm: helm template $args failed, but not with \"$expected\":" >&2
    cat "$tmp/refused.txt" >&2
    exit 1
  fi
  echo "refused as expected: $args: $expected"
done

# The validator must catch what it is for: each edit of the default render
# (sed expression | a piece of the expected error) has to fail it.
echo "== check-helm: the validator refuses broken renders"
mutations=(
  's/^  maxUnavailable: 1/  maxUnavailable: 1\n  maxUnavalable: 1/|unknown field "spec.maxUnavalable"'
  's/^  replicas: 1$/  replicas: one/|cannot unmarshal string into Go struct field StatefulSetSpec.spec.replicas'
  's/^    - name: admin$/    - name: admin\n      name: admin2/|strict decoding error'
  's/^kind: PodDisruptionBudget/kind: PodDisruptionBudgets/|no kind "PodDisruptionBudgets" is registered'
  's/- --listen=/- --listen-addr=/|flag --listen-addr is not an option'
  's/- --log-format=json/- --log-format/|flag --log-format needs a value'
  '/- --data-dir=/d|required flag --data-dir (or OMEGA_DATA_DIR) is missing'
  's/containerPort: 4433/containerPort: 4434/|container port quic is 4434/UDP but --listen listens on 4433/UDP'
  's/protocol: UDP/protocol: TCP/|container port quic is 4433/TCP'
  's#path: /ready#path: /api/v1/stats#|needs a token'
  's#path: /ready#path: /readyz#|is not an admin route'
  's/name: OMEGA_NODE_NAME/name: OMEGA_NODENAME/|env OMEGA_NODENAME is not read'
  's/targetPort: admin/targetPort: metrics/|targetPort metrics is no container port'
  's/^      app.kubernetes.io\/instance: omega$/      app.kubernetes.io\/instance: other/|does not match the pod template'
  's/- serve$/- server/|must be one of omega-node'"'"'s subcommands'
  's/mountPath: \/run\/omega\/secrets$/mountPath: \/run\/omega\/other/|--certs=/run/omega/secrets/certs is under no volume mount'
)
for m in "${mutations[@]}"; do
  IFS='|' read -r expr expected <<< "$m"
  sed "$expr" "$tmp/default.yaml" > "$tmp/broken.yaml"
  if cmp -s "$tmp/default.yaml" "$tmp/broken.yaml"; then
    echo "check-helm: the edit $expr changed nothing" >&2
    exit 1
  fi
  if "$validate" -top-help "$tmp/top-help.txt" -serve-help "$tmp/serve-help.txt" \
    -admin-source constellation-node/src/admin.rs -external omega-node-certs \
    "$tmp/broken.yaml" > /dev/null 2> "$tmp/validate.err"; then
    echo "check-helm: the validator accepted the edit $expr" >&2
    exit 1
  fi
  if ! grep -qF -- "$expected" "$tmp/validate.err"; then
    echo "check-helm: the validator refused the edit $expr, but not with \"$expected\":" >&2
    cat "$tmp/validate.err" >&2
    exit 1
  fi
  echo "refused as expected: $expected"
done
echo "check-helm: chart linted, rendered and validated"
