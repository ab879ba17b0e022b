//! The catalog's MiniLM embeddings for an evaluation, computed once with the
//! real model (`omega-embed`, over [`CatalogItem::embedding_text`], the text
//! the TV embeds) and cached in a file so reruns start at once.
//!
//! The cache file is `<cache dir>/catalog-<key>.emb`, where the key is an
//! FNV-1a hash of the model's files (config, tokenizer, weights) and of every
//! item's text in order: a changed model or catalog gets a new file. A file
//! that does not match (key, count, length, a vector that is not unit-norm)
//! is recomputed and rewritten. The directory keeps at most
//! [`MAX_CACHE_FILES`] such files: past that, the oldest are deleted.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use indicatif::ProgressBar;
use omega_embed::{Embedder, EmbedderOptions};
use omega_protocol::hash::Fnv1a;
use omega_protocol::{CatalogItem, Embedding, EMBEDDING_DIM};

/// Cache files kept in the cache directory (one per model and catalog).
pub const MAX_CACHE_FILES: usize = 8;

/// Texts embedded per call to the model.
const BATCH: usize = 64;

const MAGIC: &[u8; 8] = b"OMEGAEM1";

/// Where the embeddings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// Read from this cache file.
    Cached(PathBuf),
    /// Computed with the model (and written to this cache file).
    Computed(PathBuf),
}

/// The key of a model and a list of texts.
fn cache_key(model_dir: &Path, texts: &[String]) -> Result<u64> {
    let mut h = Fnv1a::new();
    for f in ["config.json", "tokenizer.json", "model.safetensors"] {
        let path = model_dir.join(f);
        let mut file =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = file
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
        }
        h.write(&[0xff]);
    }
    for t in texts {
        h.write(t.as_bytes());
        h.write(&[0]);
    }
    Ok(h.finish())
}

fn read_cache(path: &Path, key: u64, count: usize) -> Option<Vec<Embedding>> {
    let bytes = std::fs::read(path).ok()?;
    let header = MAGIC.len() + 16;
    if bytes.len() != header + count * EMBEDDING_DIM * 4 || &bytes[..MAGIC.len()] != MAGIC {
        return None;
    }
    let word = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    if word(MAGIC.len())? != key || word(MAGIC.len() + 8)? != count as u64 {
        return None;
    }
    bytes[header..]
        .chunks_exact(EMBEDDING_DIM * 4)
        .map(|v| {
            let values = v
                .chunks_exact(4)
                .map(|b| b.try_into().map(f32::from_le_bytes))
                .collect::<Result<Vec<f32>, _>>()
                .ok()?;
            // Stored unit-norm: anything else is not what was written.
            let norm = values.iter().map(|x| x * x).sum::<f32>().sqrt();
            if (norm - 1.0).abs() > 1e-3 {
                return None;
            }
            Embedding::new(values).ok()
        })
        .collect()
}

fn write_cache(path: &Path, key: u64, vectors: &[Embedding]) -> Result<()> {
    let mut bytes = Vec::with_capacity(MAGIC.len() + 16 + vectors.len() * EMBEDDING_DIM * 4);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&key.to_le_bytes());
    bytes.extend_from_slice(&(vectors.len() as u64).to_le_bytes());
    for v in vectors {
        for x in v.as_slice() {
            bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("emb.tmp");
    std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))
}

/// Deletes the oldest cache files past [`MAX_CACHE_FILES`].
fn prune(dir: &Path) -> Result<()> {
    let mut files: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("catalog-") && n.ends_with(".emb"))
        })
        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p)))
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(MAX_CACHE_FILES);
    for (_, p) in files.into_iter().take(excess) {
        std::fs::remove_file(&p).with_context(|| format!("removing {}", p.display()))?;
    }
    Ok(())
}

/// The embeddings of `items` (in order): from the cache when it matches,
/// else computed with the model in `model_dir` and cached.
pub fn catalog_embeddings(
    items: &[CatalogItem],
    model_dir: &Path,
    cache_dir: &Path,
    progress: &ProgressBar,
) -> Result<(Vec<Embedding>, Source)> {
    let texts: Vec<String> = items.iter().map(CatalogItem::embedding_text).collect();
    let key = cache_key(model_dir, &texts)?;
    let path = cache_dir.join(format!("catalog-{key:016x}.emb"));
    if let Some(v) = read_cache(&path, key, texts.len()) {
        return Ok((v, Source::Cached(path)));
    }
    let embedder = Embedder::load(model_dir, EmbedderOptions::default())
        .with_context(|| format!("loading the model from {}", model_dir.display()))?;
    progress.set_length(texts.len() as u64);
    progress.set_message("embedding the catalog");
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(BATCH) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        for v in embedder.embed_batch(&refs)? {
            out.push(Embedding::new(v.to_vec())?);
        }
        progress.inc(chunk.len() as u64);
    }
    write_cache(&path, key, &out)?;
    prune(cache_dir)?;
    // What a rerun reads (Embedding::new renormalizes on the way in), so the
    // first run and the reruns rank with identical vectors.
    let out = read_cache(&path, key, texts.len())
        .with_context(|| format!("reading back {}", path.display()))?;
    Ok((out, Source::Computed(path)))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn unit(i: usize) -> Embedding {
        let mut v = vec![0.0f32; EMBEDDING_DIM];
        v[i % EMBEDDING_DIM] = 1.0;
        Embedding::new(v).unwrap()
    }

    #[test]
    fn cache_round_trips_and_refuses_what_does_not_match() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("catalog-1.emb");
        let v = vec![unit(1), unit(7)];
        write_cache(&path, 99, &v).unwrap();
        assert_eq!(read_cache(&path, 99, 2).unwrap(), v);
        assert!(read_cache(&path, 98, 2).is_none(), "other key");
        assert!(read_cache(&path, 99, 3).is_none(), "other count");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.pop();
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_cache(&path, 99, 2).is_none(), "truncated");
        // A vector that is not unit-norm is refused.
        write_cache(&path, 99, &v).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let at = MAGIC.len() + 16 + 4;
        bytes[at..at + 4].copy_from_slice(&3.0f32.to_le_bytes());
        std::fs::write(&path, &bytes).unwrap();
        assert!(read_cache(&path, 99, 2).is_none(), "not unit-norm");
    }

    #[test]
    fn prune_keeps_the_newest_files() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..MAX_CACHE_FILES + 3 {
            let p = dir.path().join(format!("catalog-{i:02}.emb"));
            std::fs::write(&p, b"x").unwrap();
            let t =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1000 + i as u64);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        std::fs::write(dir.path().join("other.txt"), b"keep").unwrap();
        prune(dir.path()).unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left.len(), MAX_CACHE_FILES + 1);
        assert_eq!(left[0], "catalog-03.emb", "the 3 oldest are gone");
        assert!(left.contains(&"other.txt".to_string()));
    }
}
