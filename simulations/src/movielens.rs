//! Reads MovieLens item files (`u.item` of ml-100k, or `movies.csv` of the
//! newer releases) from where the data set lives; it is never copied into the
//! repository (research licence).

use anyhow::{bail, Context, Result};
use std::path::Path;

/// One title with its genres.
#[derive(Debug, Clone, PartialEq)]
pub struct Movie {
    /// MovieLens item id.
    pub id: u32,
    /// Title with year, as MovieLens writes it.
    pub title: String,
    /// Genre names.
    pub genres: Vec<String>,
}

/// Reads the items of a MovieLens directory (`u.item` + `u.genre`, or `movies.csv`).
pub fn read_movies(dir: &Path) -> Result<Vec<Movie>> {
    let item = dir.join("u.item");
    if item.exists() {
        let genres = read_genres(&dir.join("u.genre"))?;
        // ml-100k's files are Latin-1.
        let bytes = std::fs::read(&item).with_context(|| format!("reading {}", item.display()))?;
        let text: String = bytes.iter().map(|&b| b as char).collect();
        return text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, line)| {
                parse_u_item(line, &genres).with_context(|| format!("{}:{}", item.display(), n + 1))
            })
            .collect();
    }
    let csv = dir.join("movies.csv");
    if csv.exists() {
        let text =
            std::fs::read_to_string(&csv).with_context(|| format!("reading {}", csv.display()))?;
        return text
            .lines()
            .skip(1)
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, line)| {
                parse_movies_csv(line).with_context(|| format!("{}:{}", csv.display(), n + 2))
            })
            .collect();
    }
    bail!("{} holds neither u.item nor movies.csv", dir.display())
}

fn read_genres(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| l.split('|').next())
        .filter(|g| !g.is_empty())
        .map(str::to_owned)
        .collect())
}

fn parse_u_item(line: &str, genre_names: &[String]) -> Result<Movie> {
    let fields: Vec<&str> = line.split('|').collect();
    if fields.len() < 6 {
        bail!(
            "expected at least 6 '|'-separated fields, found {}",
            fields.len()
        );
    }
    let id = fields[0].parse().context("item id")?;
    let flags = &fields[fields.len().saturating_sub(genre_names.len())..];
    let genres = flags
        .iter()
        .zip(genre_names)
        .filter(|(f, _)| **f == "1")
        .map(|(_, g)| g.clone())
        .collect();
    Ok(Movie {
        id,
        title: fields[1].to_owned(),
        genres,
    })
}

fn parse_movies_csv(line: &str) -> Result<Movie> {
    // movieId,title,genres — the title may be quoted and contain commas.
    let (id, rest) = line.split_once(',').context("missing title")?;
    let (title, genres) = match rest.strip_prefix('"') {
        Some(q) => {
            let end = q.rfind('"').context("unterminated quoted title")?;
            (
                q[..end].replace("\"\"", "\""),
                q[end + 1..].trim_start_matches(','),
            )
        }
        None => {
            let (t, g) = rest.rsplit_once(',').context("missing genres")?;
            (t.to_owned(), g)
        }
    };
    Ok(Movie {
        id: id.parse().context("movie id")?,
        title,
        genres: genres
            .split('|')
            .filter(|g| !g.is_empty() && *g != "(no genres listed)")
            .map(str::to_owned)
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_layouts() {
        let names: Vec<String> = ["unknown", "Action", "Comedy"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let m = parse_u_item("1|Toy Story (1995)|01-Jan-1995||http://x|0|0|1", &names).unwrap();
        assert_eq!(
            (m.id, m.title.as_str(), m.genres.clone()),
            (1, "Toy Story (1995)", vec!["Comedy".to_string()])
        );
        let m =
            parse_movies_csv("11,\"American President, The (1995)\",Comedy|Drama|Romance").unwrap();
        assert_eq!(m.title, "American President, The (1995)");
        assert_eq!(m.genres.len(), 3);
        assert!(parse_u_item("garbage", &names).is_err());
        assert!(parse_movies_csv("x,y,z").is_err());
    }

    #[test]
    fn reads_ml_100k_when_present() {
        // `../shared` beside the repository, or OMEGA_SHARED_DIR (scripts/test.sh).
        let shared = std::env::var_os("OMEGA_SHARED_DIR").map_or_else(
            || Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")).to_path_buf(),
            std::path::PathBuf::from,
        );
        let movies = read_movies(&shared.join("data/movielens/ml-100k")).unwrap();
        assert_eq!(movies.len(), 1682);
        assert_eq!(movies[0].title, "Toy Story (1995)");
        assert!(movies[0].genres.contains(&"Animation".to_string()));
    }
}
