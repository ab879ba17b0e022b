#!/usr/bin/env bash
# The layer rule of ARCHITECTURE.md: the cores (omega-protocol,
# omega-brain-core, omega-constellation-core) depend on no runtime, actor
# system, database, model or network crate. Fails, naming the crate and the
# dependency, when `cargo tree -e normal` says otherwise.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

forbidden='^(tokio|ractor|redb|usearch|candle-core|quinn|quinn-proto|rustls|scylla) '
status=0
for crate in omega-protocol omega-privacy omega-brain-core omega-constellation-core; do
  found=$(cargo tree -e normal -p "$crate" --prefix none --no-dedupe 2>/dev/null \
    | grep -E "$forbidden" | sort -u || true)
  if [ -n "$found" ]; then
    echo "error: $crate depends on:" >&2
    echo "$found" | sed 's/^/  /' >&2
    status=1
  else
    echo "$crate: no runtime, database, model or network crate"
  fi
done
exit $status
