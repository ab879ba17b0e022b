//! The MiniLM (BERT) encoder: weights read from the safetensors file with positioned
//! reads (the word-embedding rows per token, at run time), and a forward pass written
//! for this model on candle tensors. No memory mapping, no `unsafe`.
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
//! - Inputs of up to 64 tokens (one short text) split each product by output columns
//!   into two products run side by side (`rayon::join`), each over half of the
//!   weight's columns, rather than letting gemm thread it: gemm's threads meet after
//!   every block of the inner dimension, here once per product. p50 of a short text
//!   1.66–1.67 -> 1.46–1.48 ms (one binary, the threshold switched between
//!   alternating runs under `chrt -f 10`, 2-core AMD EPYC with AVX-512, loaded
//!   machine). Batches of 32 (~500 tokens) split the same way measured no different
//!   (1,150–1,157 against 1,150–1,165 texts/s), so they keep gemm's threading.
//! - No padding at all: the texts of a batch are packed one after another into one
//!   `(total tokens, 384)` matrix. Attention runs per text over its own tokens, which
//!   is exactly padding to the longest plus a mask, without computing padded rows.
//! - The word-embedding table (30522 x 384 f32, 45 MiB, half the file) is never
//!   loaded: each token's 1,536-byte row is read with `pread` when a text uses it
//!   (~1 µs from the page cache; a text costs ~2 ms). Mapped instead, the pages of
//!   the rows in use stayed resident and grew with the vocabulary seen: 1,000 texts
//!   spread over 20,003 distinct tokens left 40 MiB of `RssFile`; with `pread` the
//!   same run ends at 5.0 MiB (the binary), at the same speed (p50 2.3 ms, 997
//!   texts/s in batches of 32) and with bit-identical embeddings (2.4 MB of dumped
//!   vectors compared).
//! - Every other weight (43 MB of the file) is read with positioned reads (`pread`)
//!   through one reused 128 KiB buffer, 16 rows at a time, straight into its final
//!   transposed layout (no candle temporaries): its file pages never enter this
//!   process's RSS. Read through a mapping of the whole file, as before, they stayed
//!   resident for the life of the process (~41 MiB of `RssFile`, never read again):
//!   `RssFile` after load 46.2–47.4 -> 4.7–5.5 MiB (the binary and libraries),
//!   `VmRSS` 104.9–106.1 -> 68.4–72.1 MiB, and `VmHWM` right after load equals
//!   `VmRSS` (no step holds a second copy). Same values, same arithmetic: the
//!   embeddings are bit for bit those of the mapped loader. Loading is no slower:
//!   22–240 ms on the loaded shared machine against 41–227 ms for the mapped loader
//!   in the same session.
//! - Token type is always 0, so the type-0 embedding is pre-added to the position
//!   embeddings.

use crate::kernels::{self, LayerNormParams};
use crate::{EmbedError, Embedding, DIM};
use candle_core::{CpuStorage, Device, Layout, Shape, Tensor};
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
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

impl Dense {
    /// `x @ w` (the bias is added by the fused kernel that follows). Inputs of at
    /// most [`SPLIT_ROWS`] rows, with two or more threads in the pool, are computed as
    /// two products over the two halves of `w`'s columns side by side (`rayon::join`),
    /// joined once at the end (module docs).
    fn apply(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let n = self.w.dim(1)?;
        if x.dim(0)? > SPLIT_ROWS || rayon::current_num_threads() < 2 {
            return x.matmul(&self.w);
        }
        let half = n / 2;
        let (left, right) = rayon::join(
            || x.matmul(&self.w.narrow(1, 0, half)?),
            || x.matmul(&self.w.narrow(1, half, n - half)?),
        );
        Tensor::cat(&[left?, right?], 1)
    }
}

/// Largest input (in tokens) whose products [`Dense::apply`] splits by columns: one or
/// a few short texts. Larger ones keep gemm's threading, which is efficient there.
const SPLIT_ROWS: usize = 64;

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
    /// `model.safetensors`, open: word-embedding rows are read from it per token.
    file: File,
    path: std::path::PathBuf,
    /// Where the word-embedding table, `(vocab, hidden)` little-endian f32, starts.
    word_table: u64,
    /// Position embeddings plus the token-type-0 embedding, `(max positions, hidden)`.
    pos_type: Vec<f32>,
    emb_ln: LayerNormParams,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    vocab: usize,
}

const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

/// One entry of the safetensors header (`__metadata__` is the other kind).
#[derive(serde::Deserialize)]
struct TensorInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

#[derive(serde::Deserialize)]
#[serde(untagged)]
enum HeaderEntry {
    Tensor(TensorInfo),
    Other(serde::de::IgnoredAny),
}

/// The safetensors format caps its JSON header at 100 MB.
const MAX_HEADER: u64 = 100_000_000;

/// Bytes of the one buffer every positioned read goes through (it grows to `TILE` rows
/// of the widest weight if that is more: 16 x 1536 f32 = 96 KiB here).
const CHUNK: usize = 128 * 1024;

/// Reads tensors of `model.safetensors` with positioned reads (`pread`), checking
/// dtype, shape and byte length. The file layout: an 8-byte little-endian header
/// length, the JSON header, then the data; a tensor's bytes are at
/// `8 + header length + data_offsets`.
struct Reader<'a> {
    file: File,
    path: &'a Path,
    data_start: u64,
    file_len: u64,
    tensors: HashMap<String, TensorInfo>,
    /// Reused by every read: the only copy of file bytes this process holds.
    buf: Vec<u8>,
}

impl<'a> Reader<'a> {
    fn open(path: &'a Path) -> Result<Self, EmbedError> {
        let io = |source| EmbedError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bad = |reason: String| EmbedError::Weights {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(io)?;
        let file_len = file.metadata().map_err(io)?.len();
        let mut n = [0u8; 8];
        if file_len < 8 {
            return Err(bad(format!("{file_len} bytes: not a safetensors file")));
        }
        file.read_exact_at(&mut n, 0).map_err(io)?;
        let header_len = u64::from_le_bytes(n);
        if header_len > MAX_HEADER || header_len > file_len - 8 {
            return Err(bad(format!(
                "header of {header_len} bytes in a file of {file_len}: not a safetensors file"
            )));
        }
        let mut header = vec![0u8; header_len as usize];
        file.read_exact_at(&mut header, 8).map_err(io)?;
        let entries: HashMap<String, HeaderEntry> =
            serde_json::from_slice(&header).map_err(|e| bad(format!("safetensors header: {e}")))?;
        let tensors = entries
            .into_iter()
            .filter_map(|(name, entry)| match entry {
                HeaderEntry::Tensor(t) => Some((name, t)),
                HeaderEntry::Other(_) => None,
            })
            .collect();
        Ok(Self {
            file,
            path,
            data_start: 8 + header_len,
            file_len,
            tensors,
            buf: vec![0; CHUNK],
        })
    }

    fn bad(&self, reason: String) -> EmbedError {
        EmbedError::Weights {
            path: self.path.to_path_buf(),
            reason,
        }
    }

    /// Where the little-endian f32 bytes of `name`, which must have `shape`, are in
    /// the file.
    fn locate(&self, name: &str, shape: &[usize]) -> Result<Range<u64>, EmbedError> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| self.bad(format!("{name}: no such tensor in the file")))?;
        if t.dtype != "F32" || t.shape != shape {
            return Err(self.bad(format!(
                "{name} is {} {:?}, expected F32 {shape:?}",
                t.dtype, t.shape
            )));
        }
        let (start, end) = t.data_offsets;
        let len = shape.iter().product::<usize>() as u64 * 4;
        if end < start || end - start != len {
            return Err(self.bad(format!("{name}: {start}..{end} for {shape:?}")));
        }
        match self.data_start.checked_add(end) {
            Some(file_end) if file_end <= self.file_len => Ok(self.data_start + start..file_end),
            _ => Err(self.bad(format!(
                "{name} ends past the end of the {}-byte file",
                self.file_len
            ))),
        }
    }

    /// Reads `len` bytes at `offset` into the start of the buffer and returns them.
    fn read_at(&mut self, offset: u64, len: usize) -> Result<&[u8], EmbedError> {
        if len > self.buf.len() {
            // Only a model wider than this one: TILE rows of its widest weight.
            self.buf.resize(len, 0);
        }
        let buf = &mut self.buf[..len];
        self.file
            .read_exact_at(buf, offset)
            .map_err(|source| EmbedError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
        Ok(buf)
    }

    /// Appends `f` of each value of `name`, which must have `shape`, read in
    /// buffer-sized chunks.
    fn extend_values(
        &mut self,
        name: &str,
        shape: &[usize],
        out: &mut Vec<f32>,
        f: impl Fn(f32) -> f32,
    ) -> Result<(), EmbedError> {
        let range = self.locate(name, shape)?;
        out.reserve(shape.iter().product());
        let mut offset = range.start;
        while offset < range.end {
            let n = CHUNK.min((range.end - offset) as usize);
            out.extend(f32s(self.read_at(offset, n)?).map(&f));
            offset += n as u64;
        }
        Ok(())
    }

    fn values(&mut self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EmbedError> {
        let mut out = Vec::new();
        self.extend_values(name, shape, &mut out, |v| v)?;
        Ok(out)
    }

    fn layer_norm(
        &mut self,
        prefix: &str,
        len: usize,
        eps: f64,
    ) -> Result<LayerNormParams, EmbedError> {
        Ok(LayerNormParams {
            gamma: self.values(&format!("{prefix}.weight"), &[len])?,
            beta: self.values(&format!("{prefix}.bias"), &[len])?,
            eps: eps as f32,
        })
    }

    /// Dense layers `prefixes` (PyTorch `(out, in)` weights, scaled by their factor)
    /// side by side as one `(in, sum of outs)` weight, read straight into that layout:
    /// one allocation, no transposed copies left behind, and the file read `TILE`
    /// rows at a time into the reader's buffer (never through a mapping).
    fn dense(&mut self, prefixes: &[(&str, usize, f32)], n_in: usize) -> Result<Dense, EmbedError> {
        let n_out: usize = prefixes.iter().map(|(_, n, _)| n).sum();
        let mut w = vec![0f32; n_in * n_out];
        let mut b = Vec::with_capacity(n_out);
        let mut col = 0;
        for &(prefix, n, scale) in prefixes {
            let range = self.locate(&format!("{prefix}.weight"), &[n, n_in])?;
            // Transposed 16 source rows at a time, so that each write is a run of 16
            // values (element by element, the scattered writes made loading 2x slower).
            for t in 0..n.div_ceil(TILE) {
                let n_rows = TILE.min(n - t * TILE);
                let offset = range.start + (t * TILE * n_in * 4) as u64;
                let src = self.read_at(offset, n_rows * n_in * 4)?;
                let rows: Vec<&[u8]> = src.chunks_exact(n_in * 4).collect();
                let start = col + t * TILE;
                for (i, dst) in w.chunks_exact_mut(n_out).enumerate() {
                    for (d, row) in dst[start..start + rows.len()].iter_mut().zip(&rows) {
                        let b = &row[i * 4..i * 4 + 4];
                        *d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]) * scale;
                    }
                }
            }
            self.extend_values(&format!("{prefix}.bias"), &[n], &mut b, |v| v * scale)?;
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

/// Little-endian f32 bytes as values (byte buffers give no alignment guarantee).
fn f32s(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

impl MiniLm {
    pub(crate) fn load(path: &Path, cfg: &Config) -> Result<Self, EmbedError> {
        let mut r = Reader::open(path)?;
        let h = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        // The word embeddings stay in the file: each token's row is read when
        // used, so none of the table's 45 MiB is ever resident in this process.
        let word_table = r.locate(WORD_EMBEDDINGS, &[cfg.vocab_size, h])?.start;
        let mut pos_type = r.values(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
        )?;
        let types = r.values(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
        )?;
        for row in pos_type.chunks_exact_mut(h) {
            for (p, t) in row.iter_mut().zip(&types[..h]) {
                *p += t;
            }
        }

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
            word_table,
            file: r.file,
            path: path.to_path_buf(),
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
        let mut row = [0u8; DIM * 4];
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
                // One positioned read per token (~1 µs from the page cache, next
                // to ~2 ms per text for the encoder).
                self.file
                    .read_exact_at(&mut row, self.word_table + (id * DIM * 4) as u64)
                    .map_err(|source| EmbedError::Io {
                        path: self.path.clone(),
                        source,
                    })?;
                let word = f32s(&row);
                let pos_type = &self.pos_type[pos * DIM..(pos + 1) * DIM];
                x.extend(word.zip(pos_type).map(|(w, p)| w + p));
            }
        }
        kernels::layer_norm(&mut x, None, None, &self.emb_ln);
        Ok(Tensor::from_vec(x, (rows, DIM), &Device::Cpu)?)
    }

    fn layer(&self, l: &Layer, x: &Tensor, seqs: &[Range<usize>]) -> candle_core::Result<Tensor> {
        let qkv = l.qkv.apply(x)?;
        let ctx = qkv.apply_op1_no_bwd(&Attention {
            bias: &l.qkv.b,
            seqs,
            heads: self.heads,
            head_dim: self.head_dim,
        })?;
        let a = l.attn_out.apply(&ctx)?;
        a.inplace_op2(
            x,
            &AddNorm {
                bias: &l.attn_out.b,
                ln: &l.attn_ln,
            },
        )?;
        let i = l.inter.apply(&a)?;
        i.inplace_op1(&BiasGelu { bias: &l.inter.b })?;
        let o = l.out.apply(&i)?;
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
