//! Reads a MovieLens data set's items (`u.item` of ml-100k, or `movies.csv` of
//! the newer releases) from where the data set lives; it is never copied into
//! the repository (research licence). The formats are parsed by
//! `omega_protocol::catalog_import`, the parser the node and the TV use.

use std::path::Path;

use anyhow::{bail, Context, Result};
use omega_protocol::catalog_import::{parse_import, ImportFormat};
use omega_protocol::CatalogItem;

/// Most items read from one data set (ml-latest has about 87,000).
pub const MAX_ITEMS: usize = 1_000_000;

/// Reads the items of a MovieLens directory (`u.item`, or `movies.csv`) as
/// catalog items (ids `ml100k:<n>` or `ml:<n>`).
pub fn read_movies(dir: &Path) -> Result<Vec<CatalogItem>> {
    for (file, format) in [
        ("u.item", ImportFormat::MovieLensUItem),
        ("movies.csv", ImportFormat::MoviesCsv),
    ] {
        let path = dir.join(file);
        if path.exists() {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            return parse_import(format, &bytes, MAX_ITEMS)
                .with_context(|| format!("parsing {}", path.display()));
        }
    }
    bail!("{} holds neither u.item nor movies.csv", dir.display())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_ml_100k() {
        // `../shared` beside the repository, or OMEGA_SHARED_DIR (scripts/test.sh).
        let shared = std::env::var_os("OMEGA_SHARED_DIR").map_or_else(
            || Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")).to_path_buf(),
            std::path::PathBuf::from,
        );
        let movies = read_movies(&shared.join("data/movielens/ml-100k")).unwrap();
        assert_eq!(movies.len(), 1682);
        assert_eq!(movies[0].title, "Toy Story (1995)");
        assert_eq!(movies[0].id.as_str(), "ml100k:1");
        assert!(movies[0].genres.contains(&"Animation".to_string()));
    }

    #[test]
    fn refuses_a_directory_without_items() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_movies(dir.path()).unwrap_err();
        assert!(err.to_string().contains("neither u.item nor movies.csv"));
    }
}
