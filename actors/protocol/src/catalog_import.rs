//! The formats in which catalog items arrive, parsed in one place for the TV
//! daemon (`catalog.import`), the node (its admin import) and the simulator
//! (MovieLens data sets). Plain code over bytes: no IO.
//!
//! * [`ImportFormat::JsonLines`]: one [`CatalogItem`] object per line (`id`,
//!   `title`, and optional `genres`, `year`, `description`).
//! * [`ImportFormat::MovieLensUItem`]: MovieLens ml-100k `u.item`: Latin-1,
//!   `|`-separated `id|title|release date|video date|url|19 genre flags`;
//!   ids become `ml100k:<id>` ([`ml100k_id`]), the year comes from the
//!   title's `(YYYY)` suffix, genres from the flags in ml-100k's fixed genre
//!   order ([`ML100K_GENRES`]; `unknown` is dropped).
//! * [`ImportFormat::MoviesCsv`]: MovieLens `movies.csv` (ml-latest and
//!   later): a header line, then `movieId,title,genres` (RFC 4180 quoting, read
//!   with the `csv` crate) with `|`-separated genres; ids become `ml:<id>`
//!   ([`movielens_id`]).
//!
//! Blank lines are skipped. Every item is validated like one that came over
//! the wire ([`CatalogItem::validate`]). A malformed line refuses the whole
//! import with its line number; past `max_items` the parse stops with
//! [`ImportError::TooMany`], so a huge body costs at most `max_items` items.

use crate::domain::{CatalogItem, ContentId};

/// An import body's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportFormat {
    /// One JSON [`CatalogItem`] per line.
    JsonLines,
    /// MovieLens ml-100k `u.item`.
    MovieLensUItem,
    /// MovieLens `movies.csv`.
    MoviesCsv,
}

impl ImportFormat {
    /// Parses a format name: `jsonl` (or `json-lines`, `ndjson`),
    /// `movielens-u-item` (or `u-item`), `movies-csv` (or
    /// `movielens-movies-csv`).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "jsonl" | "json-lines" | "ndjson" => Some(Self::JsonLines),
            "movielens-u-item" | "u-item" => Some(Self::MovieLensUItem),
            "movies-csv" | "movielens-movies-csv" => Some(Self::MoviesCsv),
            _ => None,
        }
    }
}

/// Why an import body was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    /// A line could not be parsed or its item is invalid (`line` is 1-based;
    /// 0 when the body as a whole is unreadable, e.g. not UTF-8).
    #[error("line {line}: {reason}")]
    Parse {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The body holds more than the allowed number of items.
    #[error("{len} items or more, at most {max} per import")]
    TooMany {
        /// Items seen when the parse stopped.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// ml-100k's genre order (`u.genre`), which `u.item`'s flags follow.
pub const ML100K_GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// The content id of ml-100k item `n` (as `u.item` and `u.data` number it).
pub fn ml100k_id(n: u64) -> String {
    format!("ml100k:{n}")
}

/// The content id of MovieLens `movies.csv` item `n` (as `ratings.csv` numbers it).
pub fn movielens_id(n: u64) -> String {
    format!("ml:{n}")
}

fn parse_err(line: usize, reason: impl Into<String>) -> ImportError {
    ImportError::Parse {
        line,
        reason: reason.into(),
    }
}

/// The year of a MovieLens title's `(YYYY)` suffix.
fn title_year(title: &str) -> Option<u16> {
    let t = title.trim_end();
    let inner = t.strip_suffix(')')?;
    let open = inner.rfind('(')?;
    let y: u16 = inner[open + 1..].trim().parse().ok()?;
    (1870..=2100).contains(&y).then_some(y)
}

fn content_id(to_id: fn(u64) -> String, raw: &str, line: usize) -> Result<ContentId, ImportError> {
    let n: u64 = raw
        .trim()
        .parse()
        .map_err(|_| parse_err(line, format!("item id {raw:?} is not a number")))?;
    ContentId::new(to_id(n)).map_err(|e| parse_err(line, e.to_string()))
}

fn parse_u_item_line(line: &str, n: usize) -> Result<CatalogItem, ImportError> {
    let fields: Vec<&str> = line.split('|').collect();
    let want = 5 + ML100K_GENRES.len();
    if fields.len() < want {
        return Err(parse_err(
            n,
            format!(
                "expected {want} '|'-separated fields, found {}",
                fields.len()
            ),
        ));
    }
    let flags = &fields[fields.len() - ML100K_GENRES.len()..];
    let genres = flags
        .iter()
        .zip(ML100K_GENRES)
        .filter(|(f, g)| f.trim() == "1" && *g != "unknown")
        .map(|(_, g)| g.to_string())
        .collect();
    let title = fields[1].trim().to_string();
    Ok(CatalogItem {
        id: content_id(ml100k_id, fields[0], n)?,
        year: title_year(&title),
        title,
        genres,
        description: String::new(),
    })
}

fn movies_csv_item(record: &csv::StringRecord, n: usize) -> Result<CatalogItem, ImportError> {
    if record.len() != 3 {
        return Err(parse_err(
            n,
            format!(
                "expected 3 fields (movieId,title,genres), found {}",
                record.len()
            ),
        ));
    }
    let title = record[1].trim().to_string();
    Ok(CatalogItem {
        id: content_id(movielens_id, &record[0], n)?,
        year: title_year(&title),
        title,
        genres: record[2]
            .trim()
            .split('|')
            .filter(|g| !g.is_empty() && *g != "(no genres listed)")
            .map(str::to_owned)
            .collect(),
        description: String::new(),
    })
}

fn push(
    items: &mut Vec<CatalogItem>,
    item: CatalogItem,
    n: usize,
    max_items: usize,
) -> Result<(), ImportError> {
    item.validate().map_err(|e| parse_err(n, e.to_string()))?;
    if items.len() == max_items {
        return Err(ImportError::TooMany {
            len: items.len() + 1,
            max: max_items,
        });
    }
    items.push(item);
    Ok(())
}

/// Parses an import body of `format` (see the module docs), at most
/// `max_items` items.
pub fn parse_import(
    format: ImportFormat,
    body: &[u8],
    max_items: usize,
) -> Result<Vec<CatalogItem>, ImportError> {
    let mut items = Vec::new();
    match format {
        ImportFormat::MoviesCsv => {
            let mut reader = csv::ReaderBuilder::new()
                .has_headers(true)
                .flexible(true)
                .from_reader(body);
            let mut record = csv::StringRecord::new();
            loop {
                let n = reader.position().line() as usize;
                match reader.read_record(&mut record) {
                    Ok(false) => break,
                    Ok(true) if record.iter().all(|f| f.trim().is_empty()) => continue,
                    Ok(true) => {
                        let n = record.position().map_or(n, |p| p.line() as usize);
                        push(&mut items, movies_csv_item(&record, n)?, n, max_items)?;
                    }
                    Err(e) => {
                        let line = e.position().map_or(n, |p| p.line() as usize);
                        return Err(parse_err(line, e.to_string()));
                    }
                }
            }
        }
        ImportFormat::MovieLensUItem | ImportFormat::JsonLines => {
            let text: std::borrow::Cow<'_, str> = if format == ImportFormat::MovieLensUItem {
                // ml-100k's files are Latin-1: every byte is one char.
                body.iter().map(|&b| b as char).collect::<String>().into()
            } else {
                std::str::from_utf8(body)
                    .map_err(|e| parse_err(0, format!("not UTF-8: {e}")))?
                    .into()
            };
            for (i, line) in text.lines().enumerate() {
                let n = i + 1;
                let line = line.trim_end_matches('\r');
                if line.trim().is_empty() {
                    continue;
                }
                let item = if format == ImportFormat::JsonLines {
                    serde_json::from_str::<CatalogItem>(line)
                        .map_err(|e| parse_err(n, e.to_string()))?
                } else {
                    parse_u_item_line(line, n)?
                };
                push(&mut items, item, n, max_items)?;
            }
        }
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_u_item_with_year_genres_and_latin1() {
        let mut flags = vec!["0"; 19];
        flags[3] = "1"; // Animation
        flags[5] = "1"; // Comedy
        let line = format!(
            "1|Toy Story (1995)|01-Jan-1995||http://x|{}",
            flags.join("|")
        );
        let mut body = line.into_bytes();
        body.extend_from_slice(b"\n\n2|Caf\xe9 (1990)|||u|"); // \xe9: é in Latin-1
        body.extend_from_slice(["0"; 19].join("|").as_bytes());
        let items = parse_import(ImportFormat::MovieLensUItem, &body, 10).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id.as_str(), "ml100k:1");
        assert_eq!(items[0].year, Some(1995));
        assert_eq!(items[0].genres, ["Animation", "Comedy"]);
        assert_eq!(items[1].title, "Café (1990)");
        assert!(items[1].genres.is_empty());
        let err = parse_import(ImportFormat::MovieLensUItem, b"garbage", 10).unwrap_err();
        assert!(matches!(err, ImportError::Parse { line: 1, .. }), "{err}");
    }

    #[test]
    fn parses_movies_csv_with_quotes_and_reports_lines() {
        let csv = "movieId,title,genres\n\
                   11,\"American President, The (1995)\",Comedy|Drama|Romance\n\
                   \n\
                   12,\"Say \"\"Hi\"\" (2001)\",(no genres listed)\n";
        let items = parse_import(ImportFormat::MoviesCsv, csv.as_bytes(), 10).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].id.as_str(), "ml:11");
        assert_eq!(items[0].title, "American President, The (1995)");
        assert_eq!(items[0].year, Some(1995));
        assert_eq!(items[0].genres, ["Comedy", "Drama", "Romance"]);
        assert_eq!(items[1].title, "Say \"Hi\" (2001)");
        assert!(items[1].genres.is_empty());
        let bad = "movieId,title,genres\n1,a,b\nx,y,z\n";
        let err = parse_import(ImportFormat::MoviesCsv, bad.as_bytes(), 10).unwrap_err();
        assert!(matches!(err, ImportError::Parse { line: 3, .. }), "{err}");
        let short = "movieId,title,genres\n1,only two\n";
        assert!(parse_import(ImportFormat::MoviesCsv, short.as_bytes(), 10).is_err());
    }

    #[test]
    fn parses_json_lines_and_validates_items() {
        let jl = "{\"id\":\"a\",\"title\":\"A\"}\n\n{\"id\":\"b\",\"title\":\"B\",\"genres\":[\"x\"],\"year\":2001}\n";
        let items = parse_import(ImportFormat::JsonLines, jl.as_bytes(), 10).unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].year, Some(2001));
        let err = parse_import(ImportFormat::JsonLines, b"{\"id\":1}\n", 10).unwrap_err();
        assert!(matches!(err, ImportError::Parse { line: 1, .. }));
        // A syntactically fine item that fails validation (empty title).
        let err = parse_import(
            ImportFormat::JsonLines,
            b"\n{\"id\":\"a\",\"title\":\" \"}",
            10,
        )
        .unwrap_err();
        assert!(matches!(err, ImportError::Parse { line: 2, .. }), "{err}");
        assert!(parse_import(ImportFormat::JsonLines, &[0xff, 0xfe], 10).is_err());
    }

    #[test]
    fn stops_past_the_item_limit() {
        let jl = "{\"id\":\"a\",\"title\":\"A\"}\n{\"id\":\"b\",\"title\":\"B\"}\n";
        assert_eq!(
            parse_import(ImportFormat::JsonLines, jl.as_bytes(), 1),
            Err(ImportError::TooMany { len: 2, max: 1 })
        );
        assert_eq!(
            ImportFormat::from_name("movies-csv"),
            Some(ImportFormat::MoviesCsv)
        );
        assert_eq!(ImportFormat::from_name("xml"), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            for f in [ImportFormat::JsonLines, ImportFormat::MovieLensUItem, ImportFormat::MoviesCsv] {
                let _ = parse_import(f, &body, 8);
            }
        }
    }
}
