//! The synthetic world of `omega-sim fleet`, as pure functions of the seed:
//! regions with time-zone offsets and taste mixes, a catalog whose titles
//! belong to taste clusters (Zipf popularity within a cluster), each
//! device's region, home cluster and activity, and its daily viewing
//! sessions and watches (an evening-peaked curve in local time, more
//! daytime viewing at weekends).
//!
//! Nothing here keeps per-device state: a device's day is recomputed from
//! `(seed, device, day)` whenever it is needed, so the simulator stores only
//! where a device is in it.

use anyhow::Result;
use omega_protocol::{CatalogEntry, CatalogItem, ContentId, Embedding, Region};

/// Seconds in a simulated day.
pub const DAY_SECS: u64 = 86_400;
/// Sessions a device may have in one day (before overlaps merge).
pub const MAX_SESSIONS: usize = 3;
/// Time-zone offsets (hours from UTC) given to regions in order.
const TZ_HOURS: [i64; 8] = [1, -5, 8, -8, 0, 5, 9, -3];
/// Relative weight of a session starting at each local hour, weekdays: a
/// morning bump and the evening peak (19–22 h).
const WEEKDAY_CURVE: [f64; 24] = [
    2.0, 1.0, 0.5, 0.3, 0.3, 0.5, 2.0, 4.0, 3.0, 2.0, 2.0, 2.0, 3.0, 3.0, 2.0, 2.0, 3.0, 5.0, 8.0,
    12.0, 14.0, 12.0, 8.0, 4.0,
];
/// Added to the weekday curve from 9 to 17 h on Saturdays and Sundays.
const WEEKEND_DAYTIME: f64 = 3.0;
/// Share of a device's watches taken from its own taste cluster (the rest
/// follow its region's mix).
const OWN_CLUSTER: f64 = 0.7;
/// Zipf exponent of popularity within a cluster.
const ZIPF_S: f64 = 1.0;

/// splitmix64: the one mixing step every draw goes through.
pub fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A stateless draw from `parts` (seed first), uniform over u64.
pub fn draw(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x006f_6d65_6761_u64, |h, &p| mix(h ^ mix(p)))
}

/// A stateless draw in [0, 1).
pub fn unit(parts: &[u64]) -> f64 {
    (draw(parts) >> 11) as f64 / (1u64 << 53) as f64
}

/// Purposes of draws, so that no two use the same stream.
#[derive(Debug, Clone, Copy)]
#[repr(u64)]
pub enum Stream {
    /// A device's region.
    Region = 1,
    /// A device's home cluster.
    Cluster,
    /// A device's activity.
    Activity,
    /// A session's presence, start and length.
    Session,
    /// A watch's time, title and fraction.
    Watch,
    /// A device's own sync slots.
    Slot,
    /// A region's taste mix.
    Mix,
    /// Catalog embeddings.
    Embedding,
    /// Whether a device watches the spreading title.
    Trend,
    /// A device's round keys.
    Keys,
}

/// One region.
#[derive(Debug, Clone)]
pub struct RegionSpec {
    /// Its name on the wire.
    pub name: Region,
    /// Hours from UTC.
    pub tz_hours: i64,
    /// Cumulative weights of the taste clusters in this region.
    pub mix_cdf: Vec<f64>,
}

/// The world: regions and catalog.
#[derive(Debug, Clone)]
pub struct World {
    /// The seed.
    pub seed: u64,
    /// Regions.
    pub regions: Vec<RegionSpec>,
    /// Taste clusters.
    pub clusters: usize,
    /// Per cluster: its titles (catalog indices), most popular first.
    pub cluster_titles: Vec<Vec<u16>>,
    /// Per cluster: cumulative Zipf weights of its titles.
    pub cluster_cdf: Vec<Vec<f64>>,
    /// Title ids by index; the last one is the spreading title, added to the
    /// node's catalog only when it starts to spread.
    pub ids: Vec<ContentId>,
}

/// Where one watch goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WatchDraw {
    /// Catalog index.
    pub title: u16,
    /// Share watched.
    pub fraction: f32,
}

/// A device's fixed traits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Traits {
    /// Region index.
    pub region: u8,
    /// Home taste cluster.
    pub cluster: u8,
}

impl World {
    /// A world of `regions` regions, `titles` ordinary titles (plus the
    /// spreading one) in `clusters` taste clusters.
    pub fn new(seed: u64, regions: usize, titles: usize, clusters: usize) -> Result<Self> {
        anyhow::ensure!(
            (1..=TZ_HOURS.len()).contains(&regions),
            "regions must be 1..=8"
        );
        anyhow::ensure!(
            (1..=64).contains(&clusters) && titles >= clusters && titles < 60_000,
            "clusters must be 1..=64 and titles at least clusters, below 60,000"
        );
        let regions = (0..regions)
            .map(|r| -> Result<RegionSpec> {
                // Each region favours two clusters strongly, the rest a little.
                let a = draw(&[seed, Stream::Mix as u64, r as u64, 0]) as usize % clusters;
                let b = draw(&[seed, Stream::Mix as u64, r as u64, 1]) as usize % clusters;
                let mut acc = 0.0;
                let mix_cdf = (0..clusters)
                    .map(|c| {
                        let base = 0.5 + unit(&[seed, Stream::Mix as u64, r as u64, 2 + c as u64]);
                        acc +=
                            base + if c == a { 6.0 } else { 0.0 } + if c == b { 3.0 } else { 0.0 };
                        acc
                    })
                    .collect();
                Ok(RegionSpec {
                    name: Region::new(format!("region-{r}"))?,
                    tz_hours: TZ_HOURS[r],
                    mix_cdf,
                })
            })
            .collect::<Result<_>>()?;
        let mut cluster_titles = vec![Vec::new(); clusters];
        for t in 0..titles {
            cluster_titles[t % clusters].push(t as u16);
        }
        let cluster_cdf = cluster_titles
            .iter()
            .map(|ts| {
                let mut acc = 0.0;
                (1..=ts.len())
                    .map(|rank| {
                        acc += 1.0 / (rank as f64).powf(ZIPF_S);
                        acc
                    })
                    .collect()
            })
            .collect();
        let mut ids = (0..titles)
            .map(|t| ContentId::new(format!("fleet:{t:05}")))
            .collect::<Result<Vec<_>, _>>()?;
        ids.push(ContentId::new("fleet:spreading")?);
        Ok(World {
            seed,
            regions,
            clusters,
            cluster_titles,
            cluster_cdf,
            ids,
        })
    }

    /// The spreading title's index.
    pub fn trend_title(&self) -> u16 {
        (self.ids.len() - 1) as u16
    }

    /// The catalog entry of title `t` (a seeded unit embedding: the fleet
    /// run recommends nothing, the vectors only travel).
    pub fn entry(&self, t: u16) -> Result<CatalogEntry> {
        let values: Vec<f32> = (0..omega_protocol::EMBEDDING_DIM as u64)
            .map(|i| unit(&[self.seed, Stream::Embedding as u64, u64::from(t), i]) as f32 - 0.5)
            .collect();
        let cluster = usize::from(t) % self.clusters;
        Ok(CatalogEntry {
            item: CatalogItem {
                id: self.ids[usize::from(t)].clone(),
                title: format!("Synthetic title {t}"),
                genres: vec![format!("cluster-{cluster}")],
                year: Some(2000 + (t % 26)),
                description: format!("A seeded title of taste cluster {cluster}."),
            },
            embedding: Embedding::new(values)?,
        })
    }

    /// Device `d`'s region and home cluster.
    pub fn traits(&self, d: u32) -> Traits {
        let region = (draw(&[self.seed, Stream::Region as u64, u64::from(d)])
            % self.regions.len() as u64) as u8;
        let u = unit(&[self.seed, Stream::Cluster as u64, u64::from(d)]);
        let cluster = pick(&self.regions[usize::from(region)].mix_cdf, u) as u8;
        Traits { region, cluster }
    }

    /// Device `d`'s viewing sessions of day `day`, as (start, end) seconds
    /// from the start of the run, sorted, overlaps merged.
    pub fn sessions(&self, d: u32, region: u8, day: u64) -> Vec<(u64, u64)> {
        let s = self.seed;
        let activity = 0.5 + unit(&[s, Stream::Activity as u64, u64::from(d)]);
        // Day 0 is a Monday: days 5 and 6 of each week are the weekend.
        let weekend = day % 7 >= 5;
        let tz = self.regions[usize::from(region)].tz_hours;
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(MAX_SESSIONS);
        for i in 0..MAX_SESSIONS as u64 {
            let p = activity * [0.85, 0.45, 0.2][i as usize] * if weekend { 1.25 } else { 1.0 };
            let at = |k: u64| unit(&[s, Stream::Session as u64, u64::from(d), day, i, k]);
            if at(0) >= p {
                continue;
            }
            let local_hour = pick_hour(at(1), weekend);
            let utc_hour = (local_hour as i64 - tz).rem_euclid(24) as u64;
            let start = day * DAY_SECS + utc_hour * 3600 + (at(2) * 3600.0) as u64;
            // 20 minutes to 4 hours, most near an hour and a half.
            let minutes = 20.0 + 220.0 * at(3).powf(1.6);
            out.push((start, start + (minutes * 60.0) as u64));
        }
        out.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
        for (a, b) in out {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        merged
    }

    /// The time of watch `k` of a session starting at `start` (seconds):
    /// the first 2–10 minutes in, then every 25–70 minutes.
    pub fn watch_time(&self, d: u32, start: u64, k: u32) -> u64 {
        let s = self.seed;
        let first = 120 + draw(&[s, Stream::Watch as u64, u64::from(d), start, 0]) % 480;
        (1..=u64::from(k)).fold(start + first, |t, j| {
            t + 1500 + draw(&[s, Stream::Watch as u64, u64::from(d), start, j]) % 2700
        })
    }

    /// What watch `k` of the session starting at `start` is.
    pub fn watch(&self, d: u32, traits: Traits, start: u64, k: u32) -> WatchDraw {
        let s = self.seed;
        let at = |x: u64| {
            unit(&[
                s,
                Stream::Watch as u64,
                u64::from(d),
                start,
                1000 + u64::from(k),
                x,
            ])
        };
        let cluster = if at(0) < OWN_CLUSTER {
            usize::from(traits.cluster)
        } else {
            pick(&self.regions[usize::from(traits.region)].mix_cdf, at(1))
        };
        let rank = pick(&self.cluster_cdf[cluster], at(2));
        let fraction = if at(3) < 0.75 { 0.9 } else { 0.3 };
        WatchDraw {
            title: self.cluster_titles[cluster][rank],
            fraction,
        }
    }
}

/// The index whose cumulative weight first passes `u` × the total.
fn pick(cdf: &[f64], u: f64) -> usize {
    let total = cdf.last().copied().unwrap_or(0.0);
    let x = u * total;
    cdf.partition_point(|&c| c <= x)
        .min(cdf.len().saturating_sub(1))
}

fn pick_hour(u: f64, weekend: bool) -> usize {
    let mut acc = 0.0;
    let cdf: Vec<f64> = WEEKDAY_CURVE
        .iter()
        .enumerate()
        .map(|(h, w)| {
            acc += w + if weekend && (9..=17).contains(&h) {
                WEEKEND_DAYTIME
            } else {
                0.0
            };
            acc
        })
        .collect();
    pick(&cdf, u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_peak_in_the_local_evening() {
        let w = World::new(7, 1, 100, 4).expect("world");
        let mut by_hour = [0u32; 24];
        for d in 0..5000 {
            for (a, _) in w.sessions(d, 0, 0) {
                // Region 0 is UTC+1.
                by_hour[(((a % DAY_SECS) / 3600 + 1) % 24) as usize] += 1;
            }
        }
        let evening: u32 = by_hour[19..=22].iter().sum();
        let night: u32 = by_hour[2..=5].iter().sum();
        assert!(evening > 10 * night, "{by_hour:?}");
    }

    #[test]
    fn draws_follow_the_seed() {
        let a = World::new(1, 2, 50, 5).expect("world");
        let b = World::new(1, 2, 50, 5).expect("world");
        let c = World::new(2, 2, 50, 5).expect("world");
        let t = a.traits(9);
        assert_eq!(a.sessions(9, t.region, 3), b.sessions(9, t.region, 3));
        assert_eq!(a.watch(9, t, 100, 2), b.watch(9, t, 100, 2));
        assert!((0..50).any(|d| a.sessions(d, 0, 0) != c.sessions(d, 0, 0)));
    }
}
