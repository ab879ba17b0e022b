//! `omega-sim eval`: recommendation quality exactly as `../shared/EVALUATION.md`
//! defines it, so that figures compare across versions and with the
//! reference methods.
//!
//! * Split: per user, interactions sorted by (timestamp, item id); the last
//!   is the test item, the others are training data ([`Split`]).
//! * Protocols ([`Protocol`]): LOO-full ranks every item the user has not
//!   interacted with in training; LOO-100 ranks the test item among 99 items
//!   the user never interacted with, drawn without replacement for every
//!   user in ascending id order by one generator seeded with 42
//!   ([`loo100_candidates`]).
//! * Metrics: HR@10 and NDCG@10 over the evaluated users ([`Metrics`]); each
//!   method's top 10 for a user is what it returns, in its order, and a
//!   title in it that is not the test item is a miss.
//! * Methods: one [`Method`] each: it learns from every user's training
//!   interactions (each user's in time order), then returns its top `k` for
//!   one user at a time. `pop` and `itemknn` ([`baselines`]) are the
//!   centralized references; `local` ([`local`]) runs each user as a TV with
//!   the TV brain's own code; `federated` ([`federated`]) runs every user as
//!   a TV syncing with the real node code in simulated time, and reports
//!   bytes per device, privacy figures and an attack beside the metrics.
//! * Confidence: methods that state one (the TV's `confidence`) get hit rate
//!   by confidence band ([`ConfidenceBands`]): of the recommended slots whose
//!   confidence falls in a band of 0.2, the share that is the test item.
//!
//! `--users N` evaluates a sample of N users drawn with `--seed`; every
//! method still learns from all users' training data, and the LOO-100
//! candidates of a user do not depend on the sample.

pub mod baselines;
pub mod embeddings;
pub mod federated;
pub mod local;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use serde::Serialize;

use crate::movielens::{Dataset, Interaction};

/// How many titles count: HR@10, NDCG@10.
pub const K: usize = 10;

/// Items drawn for each user besides the test item in LOO-100.
pub const LOO100_NEGATIVES: usize = 99;

/// The generator seed of LOO-100's draws (EVALUATION.md).
pub const LOO100_SEED: u64 = 42;

/// The methods run when none are named.
pub const DEFAULT_METHODS: [&str; 4] = ["pop", "itemknn", "local", "federated"];

/// Width of a confidence band.
pub const BAND_WIDTH: f32 = 0.2;

/// Number of confidence bands (0–0.2 … 0.8–1.0; 1.0 is in the last).
pub const BANDS: usize = 5;

/// The ranking protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Rank every item not interacted with in training.
    LooFull,
    /// Rank the test item among 99 sampled items.
    #[value(name = "loo-100")]
    Loo100,
}

impl Protocol {
    /// The name in reports: `loo-full` or `loo-100`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::LooFull => "loo-full",
            Protocol::Loo100 => "loo-100",
        }
    }
}

/// Options of one evaluation.
#[derive(Debug, Clone)]
pub struct EvalOptions {
    /// The MovieLens directory.
    pub dataset: PathBuf,
    /// LOO-full or LOO-100.
    pub protocol: Protocol,
    /// Evaluate a seeded sample of this many users (all when `None` or more
    /// than there are).
    pub users: Option<usize>,
    /// Seed of the user sample.
    pub seed: u64,
    /// Method names, in report order.
    pub methods: Vec<String>,
    /// all-MiniLM-L6-v2 directory (methods that run the TV).
    pub model_dir: PathBuf,
    /// Where catalog embeddings are cached between runs.
    pub cache_dir: PathBuf,
    /// Draw progress bars (on stderr).
    pub progress: bool,
    /// Round sizing of the `federated` method's node.
    pub federated: federated::FederatedOptions,
}

/// One user's leave-one-out split.
#[derive(Debug, Clone)]
pub struct UserSplit {
    /// The MovieLens user id.
    pub id: u64,
    /// Training interactions in time order.
    pub train: Vec<Interaction>,
    /// The last interaction.
    pub test: Interaction,
    /// The training items, sorted and distinct (for membership).
    train_items: Vec<u32>,
}

impl UserSplit {
    /// Whether the user interacted with `item` in training.
    pub fn trained_on(&self, item: u32) -> bool {
        self.train_items.binary_search(&item).is_ok()
    }

    /// The training items, ascending and distinct.
    pub fn train_items(&self) -> &[u32] {
        &self.train_items
    }
}

/// The data set split for leave-one-out: every user, in ascending id.
#[derive(Debug, Clone)]
pub struct Split {
    /// The cleaned data set (its items are the catalog).
    pub dataset: Dataset,
    /// One split per user, in ascending user id.
    pub users: Vec<UserSplit>,
}

impl Split {
    /// Splits every user of `dataset` (each has at least 2 interactions).
    pub fn new(dataset: Dataset) -> Result<Self> {
        let mut users = Vec::with_capacity(dataset.users.len());
        for u in &dataset.users {
            let Some((test, train)) = u.interactions.split_last() else {
                bail!("user {} has no interactions", u.id);
            };
            if train.is_empty() {
                bail!("user {} has a single interaction", u.id);
            }
            let mut train_items: Vec<u32> = train.iter().map(|x| x.item).collect();
            train_items.sort_unstable();
            train_items.dedup();
            users.push(UserSplit {
                id: u.id,
                train: train.to_vec(),
                test: *test,
                train_items,
            });
        }
        Ok(Self { dataset, users })
    }

    /// Number of catalog items.
    pub fn n_items(&self) -> usize {
        self.dataset.items.len()
    }
}

/// What a method ranks for one user.
#[derive(Debug, Clone, Copy)]
pub enum Candidates<'a> {
    /// LOO-full: every item the user did not interact with in training.
    Unseen,
    /// LOO-100: only these items (ascending).
    Only(&'a [u32]),
}

/// One title of a method's top `k`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ranked {
    /// The item (index into the catalog).
    pub item: u32,
    /// The method's own confidence, 0–1, if it states one.
    pub confidence: Option<f32>,
}

/// A recommendation method under evaluation.
pub trait Method: Send + Sync {
    /// Its name in reports.
    fn name(&self) -> &'static str;

    /// Learns from every user's training interactions (each user's in time
    /// order). Called once, before any [`Method::top_k`].
    fn train(&mut self, split: &Split, progress: &ProgressBar) -> Result<()>;

    /// The method's best `k` titles among `candidates` for `split.users[user]`,
    /// best first. Called concurrently for different users.
    fn top_k(
        &self,
        split: &Split,
        user: usize,
        candidates: Candidates<'_>,
        k: usize,
    ) -> Result<Vec<Ranked>>;

    /// Bytes, privacy and round figures, for a method that runs a fleet.
    fn fleet(&self) -> Option<&federated::FleetReport> {
        None
    }
}

/// The methods by name.
pub fn method_by_name(name: &str, opts: &EvalOptions) -> Result<Box<dyn Method>> {
    Ok(match name {
        "pop" => Box::new(baselines::Pop::default()),
        "itemknn" => Box::new(baselines::ItemKnn::default()),
        "local" => Box::new(local::LocalTv::new(
            opts.model_dir.clone(),
            opts.cache_dir.clone(),
        )),
        "federated" => Box::new(federated::Federated::new(
            opts.model_dir.clone(),
            opts.cache_dir.clone(),
            opts.protocol,
            opts.federated,
        )),
        other => bail!("unknown method `{other}`: available are pop, itemknn, local, federated"),
    })
}

/// The top `k` of `candidates` by `score` (higher first), ties by item id
/// ascending; for [`Candidates::Unseen`] the user's training items are
/// left out.
pub fn top_k_by_score(
    scores: &[f32],
    user: &UserSplit,
    candidates: Candidates<'_>,
    k: usize,
) -> Vec<Ranked> {
    // Kept sorted best first; k is small.
    let mut best: Vec<(f32, u32)> = Vec::with_capacity(k + 1);
    let mut offer = |item: u32| {
        let s = scores.get(item as usize).copied().unwrap_or(f32::MIN);
        // Candidates arrive in ascending id, so a tie never displaces.
        if best.len() == k && best.last().is_some_and(|&(w, _)| s <= w) {
            return;
        }
        let at = best.partition_point(|&(b, _)| b >= s);
        best.insert(at, (s, item));
        best.truncate(k);
    };
    match candidates {
        Candidates::Unseen => {
            for item in 0..scores.len() as u32 {
                if !user.trained_on(item) {
                    offer(item);
                }
            }
        }
        Candidates::Only(items) => items.iter().copied().for_each(&mut offer),
    }
    best.into_iter()
        .map(|(_, item)| Ranked {
            item,
            confidence: None,
        })
        .collect()
}

/// LOO-100's candidates of every user (in `split.users` order): the test
/// item plus [`LOO100_NEGATIVES`] items the user never interacted with
/// (neither in training nor as the test item), drawn uniformly without
/// replacement by one generator seeded with [`LOO100_SEED`], users in
/// ascending id. A user with fewer such items gets all of them. Each list
/// is sorted ascending.
pub fn loo100_candidates(split: &Split) -> Vec<Vec<u32>> {
    let n = split.n_items() as u32;
    let mut rng = StdRng::seed_from_u64(LOO100_SEED);
    split
        .users
        .iter()
        .map(|u| {
            let interacted = |i: u32| i == u.test.item || u.trained_on(i);
            let seen = u.train_items.len() + usize::from(!u.trained_on(u.test.item));
            let free = (n as usize).saturating_sub(seen);
            let mut out: Vec<u32> = if free <= LOO100_NEGATIVES {
                (0..n).filter(|&i| !interacted(i)).collect()
            } else {
                // Rejection sampling: uniform over the free items, without
                // replacement, with no per-user pass over the catalog.
                let mut drawn = Vec::with_capacity(LOO100_NEGATIVES);
                while drawn.len() < LOO100_NEGATIVES {
                    let i = rng.random_range(0..n);
                    if !interacted(i) && !drawn.contains(&i) {
                        drawn.push(i);
                    }
                }
                drawn
            };
            out.push(u.test.item);
            out.sort_unstable();
            out
        })
        .collect()
}

/// Running HR@k / NDCG@k.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Metrics {
    users: usize,
    hits: usize,
    dcg: f64,
}

impl Metrics {
    /// Adds one user whose test item is at `rank` (1-based) of the top `K`,
    /// or absent (`None`).
    pub fn add(&mut self, rank: Option<usize>) {
        self.users += 1;
        if let Some(r) = rank.filter(|r| (1..=K).contains(r)) {
            self.hits += 1;
            self.dcg += 1.0 / ((r + 1) as f64).log2();
        }
    }

    /// Adds another tally.
    pub fn merge(&mut self, o: &Metrics) {
        self.users += o.users;
        self.hits += o.hits;
        self.dcg += o.dcg;
    }

    /// Share of users whose test item is in the top K.
    pub fn hr(&self) -> f64 {
        ratio(self.hits as f64, self.users)
    }

    /// Mean of 1 / log2(rank + 1) over users (0 outside the top K).
    pub fn ndcg(&self) -> f64 {
        ratio(self.dcg, self.users)
    }
}

fn ratio(x: f64, n: usize) -> f64 {
    if n == 0 {
        0.0
    } else {
        x / n as f64
    }
}

/// Hit rate by confidence band: per band, the recommended slots whose
/// confidence falls in it and how many of them were the test item.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfidenceBands {
    slots: [usize; BANDS],
    hits: [usize; BANDS],
}

/// One band in a report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BandReport {
    /// Lower bound (inclusive).
    pub from: f32,
    /// Upper bound (exclusive, except 1.0 for the last band).
    pub to: f32,
    /// Recommended slots with a confidence in the band.
    pub recommended: usize,
    /// Of those, the slots holding the test item.
    pub hits: usize,
    /// hits / recommended (0 when empty).
    pub hit_rate: f64,
}

impl ConfidenceBands {
    /// The band of a confidence (clamped into 0–1).
    pub fn band(confidence: f32) -> usize {
        let c = if confidence.is_finite() {
            confidence.clamp(0.0, 1.0)
        } else {
            0.0
        };
        ((c / BAND_WIDTH) as usize).min(BANDS - 1)
    }

    /// Adds a slot.
    pub fn add(&mut self, confidence: f32, hit: bool) {
        let b = Self::band(confidence);
        self.slots[b] += 1;
        self.hits[b] += usize::from(hit);
    }

    /// Adds another tally.
    pub fn merge(&mut self, o: &ConfidenceBands) {
        for b in 0..BANDS {
            self.slots[b] += o.slots[b];
            self.hits[b] += o.hits[b];
        }
    }

    /// The bands for a report.
    pub fn report(&self) -> Vec<BandReport> {
        (0..BANDS)
            .map(|b| BandReport {
                from: b as f32 * BAND_WIDTH,
                to: (b + 1) as f32 * BAND_WIDTH,
                recommended: self.slots[b],
                hits: self.hits[b],
                hit_rate: ratio(self.hits[b] as f64, self.slots[b]),
            })
            .collect()
    }
}

/// One method's figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MethodReport {
    /// HR@10.
    pub hr10: f64,
    /// NDCG@10.
    pub ndcg10: f64,
    /// Hit rate by confidence band; `null` for a method without confidence.
    pub confidence_bands: Option<Vec<BandReport>>,
    /// Wall time of training and ranking, seconds.
    pub seconds: f64,
}

/// The report: EVALUATION.md's JSON object (`dataset`, `users`, `items`,
/// `protocol`, `methods`), plus the sample seed and the wall time.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// The data set's directory name.
    pub dataset: String,
    /// Users evaluated.
    pub users: usize,
    /// Catalog items.
    pub items: usize,
    /// `loo-full` or `loo-100`.
    pub protocol: &'static str,
    /// Figures by method name, in the order run.
    pub methods: MethodReports,
    /// Seed of the user sample (meaningful with `--users`).
    pub seed: u64,
    /// Wall time of the whole evaluation (loading included), seconds.
    pub seconds: f64,
    /// Bytes up and down per device in the federated run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<federated::BytesReport>,
    /// The federated run's privacy figures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub privacy: Option<federated::PrivacyReport>,
    /// What the federated run's rounds did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rounds: Option<federated::RoundsReport>,
}

/// Method reports by name, serialized as a JSON object in the order run.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MethodReports(pub Vec<(String, MethodReport)>);

impl MethodReports {
    /// The report of the method called `name`.
    pub fn get(&self, name: &str) -> Option<&MethodReport> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

impl Serialize for MethodReports {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// The users to evaluate (indices into `split.users`, ascending): all, or
/// a sample of `n` drawn with `seed`.
pub fn sample_users(total: usize, n: Option<usize>, seed: u64) -> Vec<usize> {
    match n {
        Some(n) if n < total => {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut picked = rand::seq::index::sample(&mut rng, total, n).into_vec();
            picked.sort_unstable();
            picked
        }
        _ => (0..total).collect(),
    }
}

fn bar(progress: bool, len: u64, what: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:>22} [{bar:40}] {pos}/{len} {elapsed_precise} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(what.to_string());
    pb
}

/// Runs one method over the chosen users.
fn evaluate(
    method: &mut dyn Method,
    split: &Split,
    users: &[usize],
    loo100: Option<&[Vec<u32>]>,
    progress: bool,
) -> Result<MethodReport> {
    let start = Instant::now();
    let pb = bar(progress, 0, &format!("{}: training", method.name()));
    method.train(split, &pb)?;
    pb.finish_and_clear();
    let pb = bar(
        progress,
        users.len() as u64,
        &format!("{}: ranking", method.name()),
    );
    let method: &dyn Method = method;
    let (metrics, bands, with_conf) = users
        .par_iter()
        .map(|&u| {
            let candidates = match loo100 {
                Some(c) => Candidates::Only(&c[u]),
                None => Candidates::Unseen,
            };
            let top = method.top_k(split, u, candidates, K)?;
            pb.inc(1);
            let test = split.users[u].test.item;
            let mut m = Metrics::default();
            m.add(top.iter().position(|r| r.item == test).map(|p| p + 1));
            let mut b = ConfidenceBands::default();
            let mut with_conf = false;
            for r in top.iter().take(K) {
                if let Some(c) = r.confidence {
                    b.add(c, r.item == test);
                    with_conf = true;
                }
            }
            Ok::<_, anyhow::Error>((m, b, with_conf))
        })
        .try_reduce(
            || (Metrics::default(), ConfidenceBands::default(), false),
            |mut a, b| {
                a.0.merge(&b.0);
                a.1.merge(&b.1);
                Ok((a.0, a.1, a.2 || b.2))
            },
        )?;
    pb.finish_and_clear();
    Ok(MethodReport {
        hr10: metrics.hr(),
        ndcg10: metrics.ndcg(),
        confidence_bands: with_conf.then(|| bands.report()),
        seconds: start.elapsed().as_secs_f64(),
    })
}

/// Runs the evaluation `opts` describes.
pub fn run(opts: &EvalOptions) -> Result<Report> {
    let start = Instant::now();
    // Refuse unknown methods before any work.
    let mut methods = opts
        .methods
        .iter()
        .map(|m| method_by_name(m.trim(), opts))
        .collect::<Result<Vec<_>>>()?;
    if methods.is_empty() {
        bail!("no method to run");
    }
    let dataset = crate::movielens::read_dataset(&opts.dataset)?;
    let split = Split::new(dataset)?;
    let users = sample_users(split.users.len(), opts.users, opts.seed);
    let loo100 = match opts.protocol {
        Protocol::Loo100 => Some(loo100_candidates(&split)),
        Protocol::LooFull => None,
    };
    let mut reports = MethodReports::default();
    let mut fleet = None;
    for m in &mut methods {
        let r = evaluate(m.as_mut(), &split, &users, loo100.as_deref(), opts.progress)?;
        reports.0.push((m.name().to_string(), r));
        fleet = fleet.or_else(|| m.fleet().cloned());
    }
    Ok(Report {
        dataset: split.dataset.name.clone(),
        users: users.len(),
        items: split.n_items(),
        protocol: opts.protocol.name(),
        methods: reports,
        seed: opts.seed,
        seconds: start.elapsed().as_secs_f64(),
        bytes: fleet.as_ref().map(|f| f.bytes.clone()),
        privacy: fleet.as_ref().map(|f| f.privacy.clone()),
        rounds: fleet.map(|f| f.rounds),
    })
}

/// The report as a table for people.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} · {} users · {} items · {} · {:.1} s",
        r.dataset, r.users, r.items, r.protocol, r.seconds
    );
    let _ = writeln!(
        s,
        "{:<10} {:>7} {:>8} {:>8}",
        "method", "HR@10", "NDCG@10", "seconds"
    );
    for (name, m) in &r.methods.0 {
        let _ = writeln!(
            s,
            "{:<10} {:>7.4} {:>8.4} {:>8.1}",
            name, m.hr10, m.ndcg10, m.seconds
        );
    }
    if let (Some(b), Some(p), Some(rd)) = (&r.bytes, &r.privacy, &r.rounds) {
        let _ = writeln!(
            s,
            "\nfederated: rounds every {} days, cohort {} (t = {}): {} opened, {} folded, {} failed, \
             {} not folded; {} contributions; {} titles and {} partner links published (noise {:.1}); {} users got fleet reasons \
             ({} slots); {} rounds declined by TVs; {} sync errors; {:.1} s",
            rd.interval_days,
            rd.cohort,
            rd.threshold,
            rd.opened,
            rd.folded,
            rd.failed,
            rd.not_folded,
            rd.contributions,
            rd.published_titles,
            rd.published_partners,
            rd.sigma,
            rd.users_with_fleet,
            rd.fleet_reasons,
            rd.declined,
            rd.sync_errors,
            rd.seconds
        );
        let _ = writeln!(
            s,
            "bytes per device: {:.0} up, {:.0} down, {:.1} syncs ({} elided over the run)",
            b.up_per_device, b.down_per_device, b.syncs_per_device, b.syncs_elided
        );
        let _ = writeln!(
            s,
            "privacy: epsilon {:.2} per day (delta {:e}), local epsilon of a release {}; \
             attack {:.4} ({}) / prior {:.4} = {:.2}",
            p.epsilon_per_day,
            p.delta,
            p.epsilon_local
                .map_or_else(|| "none".to_string(), |e| format!("{e:.1}")),
            p.attack_hit_rate,
            p.attack,
            p.prior_hit_rate,
            p.attack_ratio
        );
        for (why, n) in &rd.declined_reasons {
            let _ = writeln!(s, "  declined {n}x: {why}");
        }
        for (name, rate) in &p.attacks {
            let _ = writeln!(s, "  attack {name}: {rate:.4}");
        }
    }
    for (name, m) in &r.methods.0 {
        let Some(bands) = &m.confidence_bands else {
            continue;
        };
        let _ = writeln!(s, "\n{name}: hit rate by confidence band");
        let _ = writeln!(
            s,
            "{:<10} {:>11} {:>6} {:>8}",
            "band", "recommended", "hits", "hit rate"
        );
        for b in bands {
            let _ = writeln!(
                s,
                "{:.1}-{:.1}   {:>11} {:>6} {:>8.4}",
                b.from, b.to, b.recommended, b.hits, b.hit_rate
            );
        }
    }
    s
}

#[cfg(test)]
mod tests;
