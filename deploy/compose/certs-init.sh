#!/bin/sh
# The compose file's `certs` step: runs omega-certs in the node image as
# root, without a network, before the nodes, Prometheus and Grafana start.
#
# - The certificate store (both CAs with their private keys, the ledger)
#   lives in the `ca` volume, at $OMEGA_CERTS_DIR, which only this service
#   mounts; it is created on the first run.
# - Each node's volume (/out/node-N, mounted read-only at /etc/omega in that
#   node alone) gets what `omega-certs export-node` writes for that node (CA
#   certificates, CRLs, its own certificate and key) under certs/, its own
#   admin token, the cluster's metrics token and federation key.
# - Prometheus's volume gets the metrics token; Grafana's its admin password.
#
# CERTS_SHARED_DIR and CERTS_OUT_DIR move /ca/shared and /out elsewhere
# (scripts/check-deploy.sh runs this script in a temporary directory).
#
# Every run re-signs both CRLs (they are valid for 30 days) and exports
# again, so `docker-compose run --rm certs` after `omega-certs revoke`,
# `renew-node` or simply once a month is how a change reaches the nodes
# (they re-read their files every crl_poll_ms). Tokens and keys are made
# once and kept.
set -eu

ca="${OMEGA_CERTS_DIR:?OMEGA_CERTS_DIR names the certificate store}"
shared="${CERTS_SHARED_DIR:-/ca/shared}" # secrets all nodes share, beside the store
outs="${CERTS_OUT_DIR:-/out}"
nodes="node-1 node-2 node-3"
node_user=10001:10001      # the image's omega user (Dockerfile)
prometheus_user=65534:65534 # nobody, prom/prometheus's user
grafana_user=472:0         # grafana/grafana's user

# random FILE BYTES: BYTES random bytes as hex into FILE (0600), unless it
# already holds something.
random() {
  if [ ! -s "$1" ]; then
    (umask 077 && head -c "$2" /dev/urandom | od -An -tx1 | tr -d ' \n' > "$1.tmp")
    mv "$1.tmp" "$1"
  fi
}

if [ ! -f "$ca/device-ca.crt" ]; then
  omega-certs init --dir "$ca"
fi
mkdir -p "$shared" && chmod 700 "$shared"
random "$shared/metrics-token" 32
random "$shared/federation-key" 16
omega-certs refresh-crl --dir "$ca"

for node in $nodes; do
  if [ ! -f "$ca/nodes/$node.crt" ]; then
    omega-certs issue-node --dir "$ca" --name "$node" --san "$node" --san localhost
  fi
  out="$outs/$node"
  omega-certs export-node --dir "$ca" --name "$node" --out "$out/certs"
  random "$out/admin-token" 32
  (umask 077 && cp "$shared/metrics-token" "$shared/federation-key" "$out/")
  chown -R "$node_user" "$out"
  chmod 700 "$out"
done

(umask 077 && cp "$shared/metrics-token" "$outs/prometheus/omega-metrics-token")
chown -R "$prometheus_user" "$outs/prometheus"
random "$outs/grafana/admin-password" 16
chown -R "$grafana_user" "$outs/grafana"
echo "certs: CA in $ca; exported to $nodes"
