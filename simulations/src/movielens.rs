//! Reads a MovieLens data set from where it lives; it is never copied into
//! the repository (research licence).
//!
//! * Items: `u.item` of ml-100k, or `movies.csv` of the newer releases, parsed
//!   by `omega_protocol::catalog_import`, the parser the node and the TV use.
//! * Ratings ([`read_dataset`]): `u.data` (tab-separated `user item rating
//!   timestamp`) next to `u.item`, or `ratings.csv` (a header, then
//!   `userId,movieId,rating,timestamp`) next to `movies.csv`. Cleaned as
//!   EVALUATION.md says: ratings of items missing from the item file are
//!   dropped, then users left with fewer than 2 interactions.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::{bail, Context, Result};
use omega_protocol::catalog_import::{parse_import, ImportFormat};
use omega_protocol::CatalogItem;

/// Most items read from one data set (ml-latest has about 87,000).
pub const MAX_ITEMS: usize = 1_000_000;

/// Most ratings read from one data set (ml-latest has about 33 million); a
/// larger file is refused rather than read without bound.
pub const MAX_RATINGS: usize = 100_000_000;

/// One interaction of a user: an item (its index in [`Dataset::items`]), the
/// rating (1–5, halves in the newer releases) and when (Unix seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interaction {
    /// Index of the item in [`Dataset::items`] (ascending MovieLens id, so
    /// index order is id order).
    pub item: u32,
    /// The rating as given.
    pub rating: f32,
    /// Unix seconds.
    pub timestamp: u64,
}

/// A user's interactions, sorted by (timestamp, item id) ascending.
#[derive(Debug, Clone, PartialEq)]
pub struct UserHistory {
    /// The MovieLens user id.
    pub id: u64,
    /// At least 2 interactions, in time order.
    pub interactions: Vec<Interaction>,
}

/// A cleaned MovieLens data set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The directory's name (`ml-100k`).
    pub name: String,
    /// Every item of the item file, in ascending MovieLens id.
    pub items: Vec<CatalogItem>,
    /// Users with at least 2 interactions, in ascending id.
    pub users: Vec<UserHistory>,
    /// Ratings dropped because their item is not in the item file.
    pub dropped_ratings: usize,
    /// Users dropped for having fewer than 2 interactions left.
    pub dropped_users: usize,
}

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

/// The MovieLens number of an item read by [`read_movies`] (`ml100k:<n>` or `ml:<n>`).
fn movielens_number(item: &CatalogItem) -> Option<u64> {
    item.id.as_str().rsplit_once(':')?.1.parse().ok()
}

/// Reads and cleans a MovieLens directory: the items ([`read_movies`]) and
/// the ratings of the same layout (`u.data` beside `u.item`, `ratings.csv`
/// beside `movies.csv`). See the module docs.
pub fn read_dataset(dir: &Path) -> Result<Dataset> {
    let mut items = read_movies(dir)?;
    let (file, csv) = if dir.join("u.item").exists() {
        ("u.data", false)
    } else {
        ("ratings.csv", true)
    };
    let mut numbered: Vec<(u64, CatalogItem)> = items
        .drain(..)
        .map(|it| match movielens_number(&it) {
            Some(n) => Ok((n, it)),
            None => bail!("item id {} has no MovieLens number", it.id),
        })
        .collect::<Result<_>>()?;
    numbered.sort_by_key(|(n, _)| *n);
    if numbered.windows(2).any(|w| w[0].0 == w[1].0) {
        bail!("{} lists an item id twice", dir.display());
    }
    let index: HashMap<u64, u32> = numbered
        .iter()
        .enumerate()
        .map(|(i, (n, _))| Ok((*n, u32::try_from(i)?)))
        .collect::<Result<_>>()?;
    let items: Vec<CatalogItem> = numbered.into_iter().map(|(_, it)| it).collect();

    let path = dir.join(file);
    let f = std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let mut by_user: HashMap<u64, Vec<Interaction>> = HashMap::new();
    let mut read = 0usize;
    let mut dropped_ratings = 0usize;
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        let line = line.trim();
        if line.is_empty() || (csv && i == 0) {
            continue;
        }
        let (user, item, rating, timestamp) = parse_rating(line, csv)
            .with_context(|| format!("{} line {}: {line:?}", path.display(), i + 1))?;
        read += 1;
        if read > MAX_RATINGS {
            bail!("{} has more than {MAX_RATINGS} ratings", path.display());
        }
        match index.get(&item) {
            Some(&item) => by_user.entry(user).or_default().push(Interaction {
                item,
                rating,
                timestamp,
            }),
            None => dropped_ratings += 1,
        }
    }
    let before = by_user.len();
    let mut users: Vec<UserHistory> = by_user
        .into_iter()
        .filter(|(_, v)| v.len() >= 2)
        .map(|(id, mut interactions)| {
            interactions.sort_by_key(|x| (x.timestamp, x.item));
            UserHistory { id, interactions }
        })
        .collect();
    users.sort_by_key(|u| u.id);
    Ok(Dataset {
        name: dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        ),
        items,
        dropped_users: before - users.len(),
        users,
        dropped_ratings,
    })
}

/// One rating line: `user item rating timestamp`, tab-separated (`u.data`)
/// or comma-separated (`ratings.csv`).
fn parse_rating(line: &str, csv: bool) -> Result<(u64, u64, f32, u64)> {
    let mut fields = if csv {
        line.split(',').collect::<Vec<_>>()
    } else {
        line.split_whitespace().collect::<Vec<_>>()
    }
    .into_iter()
    .map(str::trim);
    let mut next = |what: &str| fields.next().with_context(|| format!("no {what}"));
    let user = next("user")?.parse().context("user id")?;
    let item = next("item")?.parse().context("item id")?;
    let rating: f32 = next("rating")?.parse().context("rating")?;
    let timestamp = next("timestamp")?.parse().context("timestamp")?;
    if !(0.0..=5.0).contains(&rating) {
        bail!("rating {rating} is outside 0-5");
    }
    Ok((user, item, rating, timestamp))
}

/// A generated data set for when no MovieLens directory is at hand (the
/// demo): `titles` titles in 6 genres ("Generated title N"), and `users`
/// users, each preferring two genres and watching 30–60 titles over a few
/// weeks, seeded by `seed`. Not for quality figures.
pub fn generated(titles: usize, users: usize, seed: u64) -> (Vec<CatalogItem>, Vec<UserHistory>) {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    const GENRES: [&str; 6] = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"];
    let mut rng = StdRng::seed_from_u64(seed);
    let items: Vec<CatalogItem> = (0..titles)
        .filter_map(|i| {
            let genre = GENRES[i % GENRES.len()];
            Some(CatalogItem {
                id: omega_protocol::ContentId::new(format!("gen:{}", i + 1)).ok()?,
                title: format!("Generated title {} ({genre})", i + 1),
                genres: vec![genre.to_owned()],
                year: Some(1980 + (i % 40) as u16),
                description: String::new(),
            })
        })
        .collect();
    let users = (0..users)
        .map(|u| {
            let liked = [
                rng.random_range(0..GENRES.len()),
                rng.random_range(0..GENRES.len()),
            ];
            let n = rng.random_range(30..=60);
            let mut t = 880_000_000 + rng.random_range(0..86_400 * 30);
            let mut interactions: Vec<Interaction> = (0..n)
                .map(|_| {
                    let g = if rng.random_bool(0.8) {
                        liked[rng.random_range(0..2)]
                    } else {
                        rng.random_range(0..GENRES.len())
                    };
                    // Lower ids of a genre are watched more (a popularity skew).
                    let per_genre = items.len().div_ceil(GENRES.len()).max(1);
                    let k = ((rng.random::<f64>().powi(2)) * per_genre as f64) as usize;
                    let item = (k * GENRES.len() + g).min(items.len().saturating_sub(1));
                    t += rng.random_range(600..86_400);
                    Interaction {
                        item: item as u32,
                        rating: if rng.random_bool(0.75) { 4.0 } else { 2.0 },
                        timestamp: t,
                    }
                })
                .collect();
            interactions.sort_by_key(|x| (x.timestamp, x.item));
            UserHistory {
                id: u as u64 + 1,
                interactions,
            }
        })
        .collect();
    (items, users)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// ml-100k in `../shared` beside the repository, or under
    /// OMEGA_SHARED_DIR (scripts/test.sh).
    fn ml_100k() -> std::path::PathBuf {
        std::env::var_os("OMEGA_SHARED_DIR")
            .map_or_else(
                || Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared")).to_path_buf(),
                std::path::PathBuf::from,
            )
            .join("data/movielens/ml-100k")
    }

    #[test]
    fn reads_ml_100k() {
        let movies = read_movies(&ml_100k()).unwrap();
        assert_eq!(movies.len(), 1682);
        assert_eq!(movies[0].title, "Toy Story (1995)");
        assert_eq!(movies[0].id.as_str(), "ml100k:1");
        assert!(movies[0].genres.contains(&"Animation".to_string()));
    }

    #[test]
    fn reads_ratings_csv_cleans_and_orders_by_time_then_item() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("movies.csv"),
            "movieId,title,genres\n10,Ten (1990),Drama\n2,Two (1991),Comedy|Drama\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ratings.csv"),
            "userId,movieId,rating,timestamp\n\
             7,10,4.5,200\n7,2,3,100\n7,99,5,50\n\
             3,10,2,300\n3,2,5,300\n\
             5,2,4,10\n5,99,1,20\n",
        )
        .unwrap();
        let d = read_dataset(dir.path()).unwrap();
        // Items in ascending MovieLens id.
        let ids: Vec<&str> = d.items.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, ["ml:2", "ml:10"]);
        // Item 99 is not in movies.csv: two ratings dropped, and user 5 is
        // left with one interaction, so is dropped too.
        assert_eq!((d.dropped_ratings, d.dropped_users), (2, 1));
        let users: Vec<u64> = d.users.iter().map(|u| u.id).collect();
        assert_eq!(users, [3, 7]);
        // Same timestamp: item id ascending (2 before 10).
        let u3: Vec<(u32, u64)> = d.users[0]
            .interactions
            .iter()
            .map(|x| (x.item, x.timestamp))
            .collect();
        assert_eq!(u3, [(0, 300), (1, 300)]);
        let u7: Vec<(u32, f32)> = d.users[1]
            .interactions
            .iter()
            .map(|x| (x.item, x.rating))
            .collect();
        assert_eq!(u7, [(0, 3.0), (1, 4.5)]);
    }

    #[test]
    fn reads_ml_100k_ratings() {
        let d = read_dataset(&ml_100k()).unwrap();
        assert_eq!(d.name, "ml-100k");
        assert_eq!((d.users.len(), d.items.len()), (943, 1682));
        let n: usize = d.users.iter().map(|u| u.interactions.len()).sum();
        assert_eq!(n, 100_000);
        assert_eq!((d.dropped_ratings, d.dropped_users), (0, 0));
    }

    #[test]
    fn refuses_a_bad_rating_line_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("movies.csv"),
            "movieId,title,genres\n1,One,Drama\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("ratings.csv"),
            "userId,movieId,rating,timestamp\n1,1,4,5\n1,1,four,6\n",
        )
        .unwrap();
        let err = format!("{:#}", read_dataset(dir.path()).unwrap_err());
        assert!(err.contains("line 3") && err.contains("rating"), "{err}");
    }

    #[test]
    fn refuses_a_directory_without_items() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_movies(dir.path()).unwrap_err();
        assert!(err.to_string().contains("neither u.item nor movies.csv"));
    }

    #[test]
    fn a_generated_set_is_seeded_and_well_formed() {
        let (items, users) = generated(60, 12, 7);
        assert_eq!((items.len(), users.len()), (60, 12));
        assert_eq!(generated(60, 12, 7).1, users, "same seed, same users");
        for u in &users {
            assert!(u.interactions.len() >= 30);
            assert!(u
                .interactions
                .windows(2)
                .all(|w| w[0].timestamp <= w[1].timestamp));
            assert!(u
                .interactions
                .iter()
                .all(|x| (x.item as usize) < items.len()));
        }
    }
}
