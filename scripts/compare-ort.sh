#!/usr/bin/env bash
# omega-embed against ONNX Runtime fp32, side by side on this machine.
#
# NOT RUN IN CI: it installs onnxruntime, onnx, numpy and tokenizers from PyPI into
# a venv (target/ort-venv, ~200 MB) and builds a release binary; run it by hand.
#
#   scripts/compare-ort.sh            (ROUNDS=3 THREADS=2 by default)
#
# 1. Builds `embed_bench` (release) and makes the venv if it is missing.
# 2. Exports all-MiniLM-L6-v2 to ONNX fp32 from the same model.safetensors that
#    omega-embed loads ($OMEGA_MODEL_DIR, else models/all-MiniLM-L6-v2, fetched and
#    checked by scripts/fetch-model.sh): a standard-op graph as torch.onnx.export
#    makes of BERT, and the same with ONNX Runtime's BERT fusions (Attention,
#    SkipLayerNormalization, BiasGelu) written in; both pool and normalize like
#    omega-embed (scripts/ort_bench.py says how).
# 3. ROUNDS alternating rounds: embed_bench, then ORT on the very texts embed_bench
#    measured (it writes them): 300 short texts one at a time (p50/p99) and 320 in
#    batches of 32 (texts/s), THREADS threads each (ORT: intra-op THREADS, inter-op 1).
#    Every round checks ORT's embeddings against omega-embed's (cosine >= 0.99999)
#    and fails otherwise.
#    As root, both run under `chrt -f 10` (real-time FIFO, as the crate's own figures
#    were measured) so that other processes do not preempt them: ORT's spinning
#    worker threads lose far more than omega-embed's to a loaded machine (at load
#    12 on 2 cores, unprioritized: 20 ms against 5 ms a text), which would flatter
#    omega-embed. SCHED=none runs them as ordinary processes.
# 4. Prints a JSON summary: medians over the rounds, each round's figures with the
#    load average before it (other work on the machine skews single rounds: compare
#    within a round), and the ratios (scripts/ort_bench.py `summary`).
#
# The export is written from the safetensors with the `onnx` package rather than by
# torch.onnx.export: torch from PyPI brings the CUDA stack (29 packages, several GB)
# for a CPU-only comparison. The graph is the one torch would emit node for node.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
model="${OMEGA_MODEL_DIR:-$here/models/all-MiniLM-L6-v2}"
rounds="${ROUNDS:-3}"
threads="${THREADS:-2}"
target="${CARGO_TARGET_DIR:-$here/target}"
venv="$target/ort-venv"
out="$target/ort"
py="$venv/bin/python"
if [ "${SCHED:-}" = none ] || [ "$(id -u)" != 0 ] || ! command -v chrt >/dev/null; then
  sched=()
else
  sched=(chrt -f 10)
fi

"$here/scripts/fetch-model.sh" "$model" >&2

if ! "$py" -c 'import onnxruntime, onnx, numpy, tokenizers' 2>/dev/null; then
  echo "making $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    onnxruntime==1.31.1 onnx==1.23.2 'numpy>=2,<3' tokenizers==0.23.3 >&2
fi

(cd "$here" && cargo build --release --quiet -p omega-embed --example embed_bench) >&2
bench="$target/release/examples/embed_bench"

mkdir -p "$out"
"$py" "$here/scripts/ort_bench.py" export "$model" "$out" >&2

files=()
for r in $(seq 1 "$rounds"); do
  cp /proc/loadavg "$out/load-$r.txt"
  echo "round $r/$rounds: load $(cut -d' ' -f1-3 /proc/loadavg) ${sched[*]+(${sched[*]})}; omega-embed" >&2
  RAYON_NUM_THREADS="$threads" ${sched[@]+"${sched[@]}"} "$bench" "$model" "$threads" \
    --dump="$out/omega.f32" --texts="$out/texts.json" >"$out/omega-$r.json"
  echo "round $r/$rounds: onnxruntime" >&2
  ${sched[@]+"${sched[@]}"} "$py" "$here/scripts/ort_bench.py" bench "$model" "$out" "$out/texts.json" \
    --dump="$out/omega.f32" --threads="$threads" >"$out/ort-$r.json"
  files+=("$out/omega-$r.json" "$out/ort-$r.json" "$out/load-$r.txt")
done

"$py" "$here/scripts/ort_bench.py" summary --sched="${sched[*]:-none}" "${files[@]}" | tee "$out/summary.json"
