#!/usr/bin/env python3
"""ONNX Runtime side of scripts/compare-ort.sh: all-MiniLM-L6-v2 in fp32 on ONNX
Runtime, measured the way omega-embed's `embed_bench` measures itself.

Not run in CI (it needs onnxruntime, onnx, numpy and tokenizers from PyPI; the
shell script makes the venv).

    ort_bench.py export <model_dir> <out_dir>
    ort_bench.py bench <model_dir> <out_dir> <texts.json> [--dump=<file>] [--threads=2]
    ort_bench.py summary [--sched=<how they ran>] <round files: omega-1.json ort-1.json load-1.txt omega-2.json ...>

`export` writes two fp32 graphs of the same weights, read from the model
directory's `model.safetensors` (the file omega-embed loads):

- `standard.onnx`: standard ONNX ops, node for node what `torch.onnx.export` of
  transformers' BertModel emits (MatMul + Add, Reshape/Transpose into heads,
  Softmax with an additive mask, erf GELU, LayerNormalization), followed by mean
  pooling over the attention mask and L2 normalization. ONNX Runtime applies its own
  graph fusions to it at load (ORT_ENABLE_ALL).
- `fused.onnx`: the graph `onnxruntime.transformers.optimizer` makes of a BERT
  export (EmbedLayerNormalization, Attention, SkipLayerNormalization, BiasGelu
  contrib ops), written directly: ONNX Runtime's fastest fp32 form of this model
  on CPU. Same pooling.

Both take `input_ids` and `attention_mask` (int64, `(batch, seq)`, padded to the
longest text of the batch) and return `embedding` (`(batch, 384)`, norm 1).

`bench` reads the texts `embed_bench --texts=<file>` wrote (the very texts it
measures), tokenizes them with the model's `tokenizer.json` as omega-embed does (its
fixed padding to 128 off, truncation at 128), then for each graph: the 30 warm-up
texts, the 300 texts one at a time (p50/p99 of text -> embedding, tokenizing
and pooling included, and of `session.run` alone), then a warm-up batch and the 320
batch texts in batches of 32 (texts/s). With `--dump`, every embedding is compared
with omega-embed's (the first 300 + 320 vectors of `embed_bench --dump`); the
minimum cosine is reported and below 0.99999 the run fails. Prints one JSON
object.

`summary` takes each round's omega-embed JSON, ONNX Runtime JSON and load average
(`/proc/loadavg` before the round), and prints both engines' medians over the rounds,
every round's figures and the ratios: `p50_ratio` is omega-embed's p50 over ORT's
(below 1: omega-embed is faster), `batch32_ratio` omega-embed's texts/s over ORT's
(above 1: omega-embed is faster), each against ORT's end-to-end figure (`embed_*`:
tokenizing and pooling included, as omega-embed's) and, for p50, against
`session.run` alone (`run_p50_us`). `omega_embed_not_slower` says, per figure,
whether omega-embed's median is at least as good as the faster ORT graph's.
"""

import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

MIN_COSINE = 0.99999
HIDDEN = 384


def read_safetensors(path):
    """The float32 tensors of a safetensors file as numpy arrays."""
    data = Path(path).read_bytes()
    header_len = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + header_len])
    start = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            continue  # embeddings.position_ids (I64): 0..max, not needed
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(data[start + a : start + b], dtype="<f4").reshape(info["shape"])
    return out


class Graph:
    """A small helper to build an ONNX graph node by node."""

    def __init__(self):
        self.nodes, self.inits, self.count = [], [], 0

    def const(self, name, array):
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type, inputs, domain="", **attrs):
        self.count += 1
        out = f"{op_type}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], domain=domain or None, **attrs))
        return out

    def model(self, output, opsets):
        ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])
        mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"])
        emb = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", HIDDEN])
        self.nodes.append(helper.make_node("Identity", [output], ["embedding"]))
        graph = helper.make_graph(self.nodes, "all-MiniLM-L6-v2", [ids, mask], [emb], self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
        model.ir_version = 9
        return model


def config(model_dir):
    return json.loads((Path(model_dir) / "config.json").read_text())


def pool(g, hidden, mask_f):
    """Mean over the unmasked tokens, then L2 normalization (omega-embed's pooling)."""
    m3 = g.op("Unsqueeze", [mask_f, g.const("axis_2", np.array([2], np.int64))])
    summed = g.op("ReduceSum", [g.op("Mul", [hidden, m3]), g.const("axis_1", np.array([1], np.int64))], keepdims=0)
    count = g.op("ReduceSum", [mask_f, "axis_1"], keepdims=1)
    mean = g.op("Div", [summed, count])
    return g.op("LpNormalization", [mean], axis=-1, p=2)


def embeddings(g, w, cfg, mask_f):
    """Word + position + token-type-0 embeddings, LayerNorm'ed (standard ops)."""
    p = "embeddings."
    word = g.op("Gather", [g.const("word", w[p + "word_embeddings.weight"]), "input_ids"], axis=0)
    seq = g.op("Shape", ["input_ids"], start=1, end=2)
    pos_table = g.const("pos", w[p + "position_embeddings.weight"])
    pos = g.op("Slice", [pos_table, g.const("zero", np.array([0], np.int64)), seq, "zero"])
    typ = g.const("type0", w[p + "token_type_embeddings.weight"][0])
    x = g.op("Add", [g.op("Add", [word, pos]), typ])
    return g.op(
        "LayerNormalization",
        [x, g.const("emb_g", w[p + "LayerNorm.weight"]), g.const("emb_b", w[p + "LayerNorm.bias"])],
        axis=-1,
        epsilon=cfg["layer_norm_eps"],
    )


def dense(g, w, x, prefix):
    """`x @ W^T + b` as torch exports a Linear on a 3-D input."""
    mm = g.op("MatMul", [x, g.const(prefix + ".wT", w[prefix + ".weight"].T)])
    return g.op("Add", [mm, g.const(prefix + ".b", w[prefix + ".bias"])])


def layer_norm(g, w, x, prefix, eps):
    return g.op(
        "LayerNormalization",
        [x, g.const(prefix + ".g", w[prefix + ".weight"]), g.const(prefix + ".b", w[prefix + ".bias"])],
        axis=-1,
        epsilon=eps,
    )


def standard_model(model_dir):
    cfg = config(model_dir)
    w = read_safetensors(Path(model_dir) / "model.safetensors")
    heads = cfg["num_attention_heads"]
    d = HIDDEN // heads
    eps = cfg["layer_norm_eps"]
    g = Graph()
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    # transformers: (1 - mask) * finfo(float32).min, shape (batch, 1, 1, seq).
    m4 = g.op("Unsqueeze", [mask_f, g.const("axes_12", np.array([1, 2], np.int64))])
    inv = g.op("Sub", [g.const("f_one", np.array(1.0, np.float32)), m4])
    add_mask = g.op("Mul", [inv, g.const("f_min", np.array(np.finfo(np.float32).min, np.float32))])
    heads_shape = g.const("heads_shape", np.array([0, 0, heads, d], np.int64))
    merged_shape = g.const("merged_shape", np.array([0, 0, HIDDEN], np.int64))
    x = embeddings(g, w, cfg, mask_f)
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        split = lambda name: g.op("Reshape", [dense(g, w, x, p + "attention.self." + name), heads_shape])
        q = g.op("Transpose", [split("query")], perm=[0, 2, 1, 3])
        k = g.op("Transpose", [split("key")], perm=[0, 2, 3, 1])
        v = g.op("Transpose", [split("value")], perm=[0, 2, 1, 3])
        scores = g.op("Div", [g.op("MatMul", [q, k]), g.const(f"sqrt_d{i}", np.array(math.sqrt(d), np.float32))])
        probs = g.op("Softmax", [g.op("Add", [scores, add_mask])], axis=-1)
        ctx = g.op("Transpose", [g.op("MatMul", [probs, v])], perm=[0, 2, 1, 3])
        ctx = g.op("Reshape", [ctx, merged_shape])
        a = dense(g, w, ctx, p + "attention.output.dense")
        a = layer_norm(g, w, g.op("Add", [a, x]), p + "attention.output.LayerNorm", eps)
        h = dense(g, w, a, p + "intermediate.dense")
        erf = g.op("Erf", [g.op("Div", [h, g.const(f"sqrt2_{i}", np.array(math.sqrt(2.0), np.float32))])])
        gelu = g.op("Mul", [g.op("Mul", [h, g.op("Add", [erf, "f_one"])]), g.const(f"half{i}", np.array(0.5, np.float32))])
        o = dense(g, w, gelu, p + "output.dense")
        x = layer_norm(g, w, g.op("Add", [o, a]), p + "output.LayerNorm", eps)
    return g.model(pool(g, x, mask_f), [("", 17)])


def fused_model(model_dir):
    cfg = config(model_dir)
    w = read_safetensors(Path(model_dir) / "model.safetensors")
    heads = cfg["num_attention_heads"]
    eps = cfg["layer_norm_eps"]
    ms = "com.microsoft"
    g = Graph()
    ids32 = g.op("Cast", ["input_ids"], to=TensorProto.INT32)
    mask32 = g.op("Cast", ["attention_mask"], to=TensorProto.INT32)
    mask_f = g.op("Cast", ["attention_mask"], to=TensorProto.FLOAT)
    segments = g.op("Mul", [ids32, g.const("i32_zero", np.array(0, np.int32))])
    p = "embeddings."
    emb = helper.make_node(
        "EmbedLayerNormalization",
        [
            ids32,
            segments,
            g.const("word", w[p + "word_embeddings.weight"]),
            g.const("pos", w[p + "position_embeddings.weight"]),
            g.const("types", w[p + "token_type_embeddings.weight"]),
            g.const("emb_g", w[p + "LayerNorm.weight"]),
            g.const("emb_b", w[p + "LayerNorm.bias"]),
            mask32,
        ],
        ["emb_out", "mask_index"],
        domain=ms,
        epsilon=eps,
    )
    g.nodes.append(emb)
    x = "emb_out"
    for i in range(cfg["num_hidden_layers"]):
        p = f"encoder.layer.{i}."
        s = p + "attention.self."
        qkv_w = np.concatenate([w[s + n + ".weight"].T for n in ("query", "key", "value")], axis=1)
        qkv_b = np.concatenate([w[s + n + ".bias"] for n in ("query", "key", "value")])
        ctx = g.op(
            "Attention",
            [x, g.const(s + "qkv_w", qkv_w), g.const(s + "qkv_b", qkv_b), "mask_index"],
            domain=ms,
            num_heads=heads,
        )

        def skip_ln(inp, skip, dense_prefix, ln_prefix):
            return g.op(
                "SkipLayerNormalization",
                [
                    inp,
                    skip,
                    g.const(ln_prefix + ".g", w[ln_prefix + ".weight"]),
                    g.const(ln_prefix + ".b", w[ln_prefix + ".bias"]),
                    g.const(dense_prefix + ".b", w[dense_prefix + ".bias"]),
                ],
                domain=ms,
                epsilon=eps,
            )

        def matmul(inp, prefix):
            return g.op("MatMul", [inp, g.const(prefix + ".wT", w[prefix + ".weight"].T)])

        d = p + "attention.output.dense"
        a = skip_ln(matmul(ctx, d), x, d, p + "attention.output.LayerNorm")
        d = p + "intermediate.dense"
        h = g.op("BiasGelu", [matmul(a, d), g.const(d + ".b", w[d + ".bias"])], domain=ms)
        d = p + "output.dense"
        x = skip_ln(matmul(h, d), a, d, p + "output.LayerNorm")
    return g.model(pool(g, x, mask_f), [("", 17), (ms, 1)])


def export(model_dir, out_dir):
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, build in (("standard", standard_model), ("fused", fused_model)):
        model = build(model_dir)
        onnx.checker.check_model(model)
        onnx.save(model, out / f"{name}.onnx")
    print(json.dumps({"exported": [str(out / "standard.onnx"), str(out / "fused.onnx")]}))


def tokenizer(model_dir):
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    tok.no_padding()
    tok.enable_truncation(max_length=128)
    return tok


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3  # errors only (its fusions warn about shape merges)
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def feeds(tok, texts):
    """Token ids and mask, padded with 0 to the longest text of the batch."""
    encs = tok.encode_batch(texts) if len(texts) > 1 else [tok.encode(texts[0])]
    n = max(len(e.ids) for e in encs)
    ids = np.zeros((len(encs), n), np.int64)
    mask = np.zeros((len(encs), n), np.int64)
    for i, e in enumerate(encs):
        ids[i, : len(e.ids)] = e.ids
        mask[i, : len(e.ids)] = 1
    return {"input_ids": ids, "attention_mask": mask}


def pct(values, p):
    s = sorted(values)
    return s[round((len(s) - 1) * p)]


def bench_one(path, tok, texts, threads):
    sess = session(path, threads)
    for t in texts["warmup"]:
        sess.run(None, feeds(tok, [t]))
    total_us, run_us, single = [], [], []
    for t in texts["single"]:
        start = time.perf_counter()
        f = feeds(tok, [t])
        mid = time.perf_counter()
        (e,) = sess.run(None, f)
        end = time.perf_counter()
        total_us.append((end - start) * 1e6)
        run_us.append((end - mid) * 1e6)
        single.append(e[0])
    batch = texts["batch"]
    sess.run(None, feeds(tok, batch[:32]))
    start = time.perf_counter()
    batched = []
    for i in range(0, len(batch), 32):
        (e,) = sess.run(None, feeds(tok, batch[i : i + 32]))
        batched.extend(e)
    per_s = len(batch) / (time.perf_counter() - start)
    return {
        "embed_p50_us": round(pct(total_us, 0.5)),
        "embed_p99_us": round(pct(total_us, 0.99)),
        "run_p50_us": round(pct(run_us, 0.5)),
        "run_p99_us": round(pct(run_us, 0.99)),
        "embed_batch32_per_s": round(per_s, 1),
    }, np.array(single + batched, np.float32)


def min_cosine(ours, theirs):
    a = ours / np.linalg.norm(ours, axis=1, keepdims=True)
    b = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    return float(np.min(np.sum(a.astype(np.float64) * b, axis=1)))


def bench(model_dir, out_dir, texts_path, dump, threads):
    texts = json.loads(Path(texts_path).read_text())
    tok = tokenizer(model_dir)
    n = len(texts["single"]) + len(texts["batch"])
    reference = None
    if dump:
        raw = np.fromfile(dump, dtype="<f4")
        if raw.size < n * HIDDEN:
            raise SystemExit(f"{dump}: {raw.size // HIDDEN} embeddings, expected at least {n}")
        reference = raw[: n * HIDDEN].reshape(n, HIDDEN)
    result = {"engine": f"onnxruntime {ort.__version__} fp32", "threads": threads}
    for name in ("standard", "fused"):
        path = Path(out_dir) / f"{name}.onnx"
        figures, emb = bench_one(path, tok, texts, threads)
        if reference is not None:
            figures["min_cosine_to_omega_embed"] = round(min_cosine(emb, reference), 9)
        result[name] = figures
    print(json.dumps(result))
    if reference is not None:
        worst = min(result[n]["min_cosine_to_omega_embed"] for n in ("standard", "fused"))
        if worst < MIN_COSINE:
            print(f"embeddings differ from omega-embed's: min cosine {worst} < {MIN_COSINE}", file=sys.stderr)
            sys.exit(1)


def median(values):
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def summary(files, sched):
    if not files or len(files) % 3:
        raise SystemExit("summary: omega.json ort.json loadavg.txt for each round")
    rounds = []
    for i in range(0, len(files), 3):
        omega = json.loads(Path(files[i]).read_text())
        ort_result = json.loads(Path(files[i + 1]).read_text())
        load = Path(files[i + 2]).read_text().split()[:3]
        rounds.append({"loadavg_1_5_15": [float(x) for x in load], "omega": omega, "ort": ort_result})

    def med(engine, key, variant=None):
        return median([(r[engine][variant] if variant else r[engine])[key] for r in rounds])

    keys = ("embed_p50_us", "embed_p99_us", "embed_batch32_per_s")
    omega = {k: med("omega", k) for k in keys}
    first = rounds[0]
    omega.update(engine=first["omega"]["engine"], kernel_isa=first["omega"]["kernel_isa"], threads=first["omega"]["threads"])
    out = {"rounds": len(rounds), "sched": sched, "cpu": cpu_model(), "omega_embed": omega, "ort": {}, "ratios": {}}
    for variant in ("standard", "fused"):
        fig = {k: med("ort", k, variant) for k in keys + ("run_p50_us",)}
        cos = [r["ort"][variant].get("min_cosine_to_omega_embed") for r in rounds]
        fig["min_cosine_to_omega_embed"] = min(c for c in cos if c is not None) if any(c is not None for c in cos) else None
        out["ort"][variant] = fig
        out["ratios"][variant] = {
            "p50_ratio": round(omega["embed_p50_us"] / fig["embed_p50_us"], 3),
            "p50_ratio_vs_run_only": round(omega["embed_p50_us"] / fig["run_p50_us"], 3),
            "batch32_ratio": round(omega["embed_batch32_per_s"] / fig["embed_batch32_per_s"], 3),
        }
    # Against the faster ORT graph on each figure.
    best_p50 = min(out["ort"][v]["embed_p50_us"] for v in ("standard", "fused"))
    best_run_p50 = min(out["ort"][v]["run_p50_us"] for v in ("standard", "fused"))
    best_batch = max(out["ort"][v]["embed_batch32_per_s"] for v in ("standard", "fused"))
    out["omega_embed_not_slower"] = {
        "p50": omega["embed_p50_us"] <= best_p50,
        "p50_vs_run_only": omega["embed_p50_us"] <= best_run_p50,
        "batch32": omega["embed_batch32_per_s"] >= best_batch,
    }
    out["ort"]["engine"] = first["ort"]["engine"]
    out["ort"]["threads"] = first["ort"]["threads"]
    out["per_round"] = [
        {
            "loadavg_1_5_15": r["loadavg_1_5_15"],
            "omega": [r["omega"][k] for k in keys],
            "ort_standard": [r["ort"]["standard"][k] for k in keys],
            "ort_fused": [r["ort"]["fused"][k] for k in keys],
        }
        for r in rounds
    ]
    out["per_round_columns"] = list(keys)
    print(json.dumps(out, indent=1))


def cpu_model():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return None


def main(argv):
    opts = {a.split("=", 1)[0]: a.split("=", 1)[1] for a in argv if a.startswith("--") and "=" in a}
    args = [a for a in argv if not a.startswith("--")]
    if len(args) == 3 and args[0] == "export":
        export(args[1], args[2])
    elif len(args) == 4 and args[0] == "bench":
        bench(args[1], args[2], args[3], opts.get("--dump"), int(opts.get("--threads", "2")))
    elif len(args) >= 1 and args[0] == "summary":
        summary(args[1:], opts.get("--sched", "none"))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
