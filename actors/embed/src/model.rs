//! The MiniLM (BERT) encoder: weights loaded from the memory-mapped safetensors file,
//! and a forward pass written for this model on candle tensors.
//!
//! What differs from `candle_transformers::models::bert::BertModel`, and why (each
//! measured with `examples/embed_bench.rs`; the table is in the crate docs):
//! - Matrix products are candle's `matmul` (gemm) against weights laid out once at
//!   load as `(in, out)`. gemm repacks PyTorch's `(out, in)` on every call: 6.7–7.3 ms
//!   per short text instead of 5.8–6.0 with AVX2 kernels, and worse with AVX-512
//!   (candle's BERT: 7.5 ms -> 10.7–13 ms). The root `Cargo.toml` turns on gemm's
//!   AVX-512 kernels (`x86-v4`, detected at run time): 5.8–6.0 -> 3.6–4.1 ms.
//! - Query, key and value are one fused `(384, 1152)` product; the 1/sqrt(head_dim)
//!   attention scale is folded into the query weights at load.
//! - Everything between the products is a fused kernel (`kernels.rs`): attention,
//!   bias + GELU, bias + residual + LayerNorm, each one pass in place: 3.6–4.1 ms ->
//!   2.1–2.3 ms per short text, 392–416 -> 750–1000 texts/s in batches of 32.
//! - No padding at all: the texts of a batch are packed one after another into one
//!   `(total tokens, 384)` matrix. Attention runs per text over its own tokens, which
//!   is exactly padding to the longest plus a mask, without computing padded rows.
//! - The word-embedding table (30522 x 384 f32, 45 MiB, half the file) is never
//!   copied: rows are read straight from the mapping, so only the pages of tokens in
//!   use become resident. The other weights are read from the mapping straight into
//!   their final layout (no candle temporaries, transposed 16 rows at a time):
//!   58.6 MiB anonymous memory after load instead of 72.6, loading in 32–40 ms
//!   instead of 56–65.
//! - Token type is always 0, so the type-0 embedding is pre-added to the position
//!   embeddings.

use crate::kernels::{self, LayerNormParams};
use crate::{EmbedError, Embedding, DIM};
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{CpuStorage, DType, Device, Layout, Shape, Tensor};
use std::ops::Range;
use std::path::Path;

/// The fields of `config.json` the encoder reads.
#[derive(Debug, Clone, serde::Deserialize)]
pub(crate) struct Config {
    pub(crate) vocab_size: usize,
    pub(crate) hidden_size: usize,
    pub(crate) num_hidden_layers: usize,
    pub(crate) num_attention_heads: usize,
    pub(crate) intermediate_size: usize,
    pub(crate) hidden_act: String,
    pub(crate) max_position_embeddings: usize,
    pub(crate) type_vocab_size: usize,
    pub(crate) layer_norm_eps: f64,
}

/// A dense layer: `x @ w + b` with `w` stored `(in, out)`.
struct Dense {
    w: Tensor,
    b: Vec<f32>,
}

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_ln: LayerNormParams,
    inter: Dense,
    out: Dense,
    out_ln: LayerNormParams,
}

/// all-MiniLM-L6-v2's encoder, ready to run.
pub(crate) struct MiniLm {
    /// Kept for the word embeddings, read in place.
    weights: MmapedSafetensors,
    /// Position embeddings plus the token-type-0 embedding, `(max positions, hidden)`.
    pos_type: Vec<f32>,
    emb_ln: LayerNormParams,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    vocab: usize,
}

const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// Memory-maps the safetensors file and parses its header.
#[allow(unsafe_code)]
fn mmap_safetensors(path: &Path) -> candle_core::Result<MmapedSafetensors> {
    // SAFETY: memory-mapping is unsafe because the file could change under the mapping.
    // The model file is a checksum-verified artefact that nothing writes while a
    // process uses it (scripts/fetch-model.sh replaces the whole directory atomically).
    unsafe { MmapedSafetensors::new(path) }
}

/// Reads tensors out of the mapping, checking dtype and shape.
struct Reader<'a> {
    weights: &'a MmapedSafetensors,
    path: &'a Path,
}

impl Reader<'_> {
    fn bad(&self, reason: String) -> EmbedError {
        EmbedError::Weights {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// The little-endian f32 bytes of `name`, which must have `shape`.
    fn bytes(&self, name: &str, shape: &[usize]) -> Result<&[u8], EmbedError> {
        let view = self
            .weights
            .get(name)
            .map_err(|e| self.bad(format!("{name}: {e}")))?;
        let dtype = DType::try_from(view.dtype()).ok();
        if dtype != Some(DType::F32) || view.shape() != shape {
            return Err(self.bad(format!(
                "{name} is {dtype:?} {:?}, expected F32 {shape:?}",
                view.shape()
            )));
        }
        let data = view.data();
        if data.len() != shape.iter().product::<usize>() * 4 {
            return Err(self.bad(format!("{name}: {} bytes for {shape:?}", data.len())));
        }
        Ok(data)
    }

    fn vector(&self, name: &str, len: usize) -> Result<Vec<f32>, EmbedError> {
        Ok(f32s(self.bytes(name, &[len])?).collect())
    }

    fn layer_norm(
        &self,
        prefix: &str,
        len: usize,
        eps: f64,
    ) -> Result<LayerNormParams, EmbedError> {
        Ok(LayerNormParams {
            gamma: self.vector(&format!("{prefix}.weight"), len)?,
            beta: self.vector(&format!("{prefix}.bias"), len)?,
            eps: eps as f32,
        })
    }

    /// Dense layers `prefixes` (PyTorch `(out, in)` weights, scaled by their factor)
    /// side by side as one `(in, sum of outs)` weight, read straight into that layout:
    /// one allocation, no transposed copies left behind.
    fn dense(&self, prefixes: &[(&str, usize, f32)], n_in: usize) -> Result<Dense, EmbedError> {
        let n_out: usize = prefixes.iter().map(|(_, n, _)| n).sum();
        let mut w = vec![0f32; n_in * n_out];
        let mut b = Vec::with_capacity(n_out);
        let mut col = 0;
        for &(prefix, n, scale) in prefixes {
            let src = self.bytes(&format!("{prefix}.weight"), &[n, n_in])?;
            // Transposed 16 source rows at a time, so that each write is a run of 16
            // values (element by element, the scattered writes made loading 2x slower).
            for (t, rows) in src.chunks(TILE * n_in * 4).enumerate() {
                let rows: Vec<&[u8]> = rows.chunks_exact(n_in * 4).collect();
                let start = col + t * TILE;
                for (i, dst) in w.chunks_exact_mut(n_out).enumerate() {
                    for (d, row) in dst[start..start + rows.len()].iter_mut().zip(&rows) {
                        let b = &row[i * 4..i * 4 + 4];
                        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * scale;
                    }
                }
            }
            b.extend(f32s(self.bytes(&format!("{prefix}.bias"), &[n])?).map(|v| v * scale));
            col += n;
        }
        Ok(Dense {
            w: Tensor::from_vec(w, (n_in, n_out), &Device::Cpu)?,
            b,
        })
    }
}

/// Rows per block when transposing weights at load.
const TILE: usize = 16;

/// Little-endian f32 bytes as values (the mapping gives no alignment guarantee).
fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl MiniLm {
    pub(crate) fn load(path: &Path, cfg: &Config) -> Result<Self, EmbedError> {
        let weights = mmap_safetensors(path).map_err(|e| EmbedError::Weights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let r = Reader {
            weights: &weights,
            path,
        };
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        // The word embeddings stay in the mapping; this checks them.
        r.bytes(WORD_EMBEDDINGS, &[cfg.vocab_size, h])?;
        let positions = r.bytes(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
        )?;
        let types = r.bytes(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        let type0: Vec<f32> = f32s(&types[..h * 4]).collect();
        let pos_type = f32s(positions)
            .zip(type0.iter().cycle())
            .map(|(p, t)| p + t)
            .collect();

        let heads = cfg.num_attention_heads;
        let head_dim = h / heads;
        let scale = 1.0 / (head_dim as f32).sqrt();
        let inter = cfg.intermediate_size;
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let (q, k, v) = (
                format!("{p}.attention.self.query"),
                format!("{p}.attention.self.key"),
                format!("{p}.attention.self.value"),
            );
            layers.push(Layer {
                // The 1/sqrt(head_dim) attention scale is folded into the query.
                qkv: r.dense(&[(&q, h, scale), (&k, h, 1.0), (&v, h, 1.0)], h)?,
                attn_out: r.dense(&[(&format!("{p}.attention.output.dense"), h, 1.0)], h)?,
                attn_ln: r.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, eps)?,
                inter: r.dense(&[(&format!("{p}.intermediate.dense"), inter, 1.0)], h)?,
                out: r.dense(&[(&format!("{p}.output.dense"), h, 1.0)], inter)?,
                out_ln: r.layer_norm(&format!("{p}.output.LayerNorm"), h, eps)?,
            });
        }
        Ok(Self {
            emb_ln: r.layer_norm("embeddings.LayerNorm", h, eps)?,
            weights,
            pos_type,
            layers,
            heads,
            head_dim,
            vocab: cfg.vocab_size,
        })
    }

    /// Embeds token sequences (each with `[CLS]`/`[SEP]`, at most max positions long):
    /// mean pooling over every token of each sequence, then L2 normalization.
    pub(crate) fn embed_ids(&self, seqs: &[Vec<u32>]) -> Result<Vec<Embedding>, EmbedError> {
        let mut ranges = Vec::with_capacity(seqs.len());
        let mut rows = 0;
        for s in seqs {
            ranges.push(rows..rows + s.len());
            rows += s.len();
        }
        let mut x = self.embeddings(seqs, rows)?;
        for layer in &self.layers {
            x = self.layer(layer, &x, &ranges)?;
        }
        let x = x.flatten_all()?.to_vec1::<f32>()?;
        Ok(ranges
            .iter()
            .map(|r| mean_pool(&x[r.start * DIM..r.end * DIM]))
            .collect())
    }

    /// Word + position + type embeddings of every token, LayerNorm'ed: `(rows, hidden)`.
    fn embeddings(&self, seqs: &[Vec<u32>], rows: usize) -> Result<Tensor, EmbedError> {
        let table = self.weights.get(WORD_EMBEDDINGS)?;
        let table = table.data();
        let mut x = Vec::with_capacity(rows * DIM);
        for seq in seqs {
            for (pos, &id) in seq.iter().enumerate() {
                let id = id as usize;
                if id >= self.vocab {
                    return Err(EmbedError::TokenOutOfRange {
                        id,
                        vocab: self.vocab,
                    });
                }
                let word = f32s(&table[id * DIM * 4..(id + 1) * DIM * 4]);
                let pos_type = &self.pos_type[pos * DIM..(pos + 1) * DIM];
                x.extend(word.zip(pos_type).map(|(w, p)| w + p));
            }
        }
        kernels::layer_norm(&mut x, None, None, &self.emb_ln);
        Ok(Tensor::from_vec(x, (rows, DIM), &Device::Cpu)?)
    }

    fn layer(&self, l: &Layer, x: &Tensor, seqs: &[Range<usize>]) -> candle_core::Result<Tensor> {
        let qkv = x.matmul(&l.qkv.w)?;
        let ctx = qkv.apply_op1_no_bwd(&Attention {
            bias: &l.qkv.b,
            seqs,
            heads: self.heads,
            head_dim: self.head_dim,
        })?;
        let a = ctx.matmul(&l.attn_out.w)?;
        a.inplace_op2(
            x,
            &AddNorm {
                bias: &l.attn_out.b,
                ln: &l.attn_ln,
            },
        )?;
        let i = a.matmul(&l.inter.w)?;
        i.inplace_op1(&BiasGelu { bias: &l.inter.b })?;
        let o = i.matmul(&l.out.w)?;
        o.inplace_op2(
            &a,
            &AddNorm {
                bias: &l.out.b,
                ln: &l.out_ln,
            },
        )?;
        Ok(o)
    }
}

/// Mean of the rows of `x` (`DIM` wide), L2-normalized.
fn mean_pool(x: &[f32]) -> Embedding {
    let mut e = [0f32; DIM];
    for row in x.chunks_exact(DIM) {
        for (a, v) in e.iter_mut().zip(row) {
            *a += v;
        }
    }
    // The mean's 1/n cancels in the normalization.
    let norm = e.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        for v in &mut e {
            *v /= norm;
        }
    }
    e
}

/// The f32 data of a contiguous CPU tensor.
fn slice<'a>(s: &'a CpuStorage, l: &Layout) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((start, end)) => Ok(&s.as_slice::<f32>()?[start..end]),
        None => candle_core::bail!("omega-embed kernels need contiguous tensors"),
    }
}

fn slice_mut<'a>(s: &'a mut CpuStorage, l: &Layout) -> candle_core::Result<&'a mut [f32]> {
    match (s, l.contiguous_offsets()) {
        (CpuStorage::F32(v), Some((start, end))) => Ok(&mut v[start..end]),
        _ => candle_core::bail!("omega-embed kernels need contiguous f32 tensors"),
    }
}

/// `(rows, 3 * hidden)` query/key/value projections -> `(rows, hidden)` context.
struct Attention<'a> {
    bias: &'a [f32],
    seqs: &'a [Range<usize>],
    heads: usize,
    head_dim: usize,
}

impl candle_core::CustomOp1 for Attention<'_> {
    fn name(&self) -> &'static str {
        "omega-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let qkv = slice(s, l)?;
        let hidden = self.heads * self.head_dim;
        let rows = self.seqs.last().map_or(0, |r| r.end);
        if qkv.len() != rows * 3 * hidden || self.bias.len() != 3 * hidden {
            candle_core::bail!("omega-attention: shape mismatch {:?}", l.shape());
        }
        let mut out = vec![0f32; rows * hidden];
        kernels::attention(
            qkv,
            self.bias,
            self.seqs,
            self.heads,
            self.head_dim,
            &mut out,
        );
        Ok((CpuStorage::F32(out), Shape::from((rows, hidden))))
    }
}

/// In place: `x = layer_norm(x + bias + residual)`.
struct AddNorm<'a> {
    bias: &'a [f32],
    ln: &'a LayerNormParams,
}

impl candle_core::InplaceOp2 for AddNorm<'_> {
    fn name(&self) -> &'static str {
        "omega-add-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<()> {
        let residual = slice(s2, l2)?;
        let x = slice_mut(s1, l1)?;
        if x.len() != residual.len() || x.len() % self.ln.gamma.len() != 0 {
            candle_core::bail!("omega-add-norm: shape mismatch");
        }
        kernels::layer_norm(x, Some(residual), Some(self.bias), self.ln);
        Ok(())
    }
}

/// In place: `x = gelu(x + bias)`.
struct BiasGelu<'a> {
    bias: &'a [f32],
}

impl candle_core::InplaceOp1 for BiasGelu<'_> {
    fn name(&self) -> &'static str {
        "omega-bias-gelu"
    }

    fn cpu_fwd(&self, s: &mut CpuStorage, l: &Layout) -> candle_core::Result<()> {
        let x = slice_mut(s, l)?;
        if x.len() % self.bias.len() != 0 {
            candle_core::bail!("omega-bias-gelu: shape mismatch");
        }
        kernels::bias_gelu(x, self.bias);
        Ok(())
    }
}
