//! `omega-sim fleet`: a deterministic, seeded, in-process run of many TVs
//! over simulated days through the real node code, in virtual time, no
//! sockets (BENCHMARKS.md, `fleet`).
//!
//! * **World** ([`world`]): regions with time-zone offsets and taste mixes,
//!   a synthetic catalog in taste clusters, each TV's daily viewing sessions
//!   (evening peak, more daytime at weekends) and watches, all pure
//!   functions of the seed.
//! * **TVs**: one compact [`sim::Device`] each (48 bytes: region, cluster,
//!   versions, fleet cursor, the last [`sim::RING`] watches, where it is in
//!   its day). The TV daemon runs while the TV has power (standby included),
//!   syncing every 5–15 minutes as the node's `next_sync_secs` says
//!   (DESIGN.md, "Sync"). Every request is built as the daemon builds it
//!   (`BrainStore::prepare_sync`: an empty pattern delta, its versions and
//!   fleet cursor, the round message) and encoded with the real codec.
//!   Devices the node invites into an aggregation round get the TV core's
//!   [`RoundClient`](omega_brain_core::RoundClient) (their device
//!   certificate is issued then), which makes their release from the ring
//!   (`plan_release`), noise, keys and masks: only those few hundred a round
//!   hold that state. Fleet pages move a compact cursor as the TV core's
//!   `FleetKnowledge::apply` does; one device in 997 also keeps the core's
//!   own `FleetKnowledge`, and the run fails if the two cursors ever differ.
//! * **Node**: omega-constellation's `sync::run` (the shell a shard actor
//!   calls: `SyncCore`, `Learning` with the default rounds, a
//!   `MemoryStore`), one call per sync, every frame through the codec, the
//!   per-device rate limit off (paging follows at once, as in `eval`).
//!   The server tier is modelled as one logical node over one store: the
//!   number of nodes is computed from the load, not simulated.
//! * **Time**: a wheel of one-minute buckets, events in time order inside
//!   a bucket; the node's learning is ticked once a simulated minute (phase
//!   deadlines pass on idle syncs too). The wall clock is read only to
//!   report what the run cost (node time per sync, fold and federation
//!   milliseconds), never to drive it.
//! * **Elided syncs**: as in `eval`'s federated fleet, a sync that would
//!   change nothing is counted (in the syncs per hour and, with the sizes
//!   of the region's last idle request and answer, in the bytes) but not
//!   run: the device is caught up (catalog version, fleet cursor), is not
//!   in a round, and its region has no round due and none inviting. Such a
//!   sync's answer carries no page and no round message and the device
//!   applies nothing; on the node it would only refresh the device record's
//!   `last_sync_ms`. Each device's first sync is always run (it creates the
//!   device record). While the region has no round open, every slot until
//!   the next round is due (or the catalog changes) is elided at once.
//! * **A spreading taste**: on `--trend-day` at 18:00 local time in
//!   `--trend-region`, a new title joins the catalog; each watch of a TV of
//!   that region that holds it is, with `--trend-share` probability, that
//!   title (once per TV). The reach is the time until 50 % and 90 % of the
//!   region's TVs hold it in the fleet knowledge the node published to
//!   them (the default thresholds: k devices, z·σ, noise).
//!
//! Determinism: everything follows `--seed` except the privacy noise, which
//! OpenDP draws from the operating system (ARCHITECTURE.md, "Invariants":
//! no caller may seed it). So the learned totals, hence which titles a
//! round publishes, the fleet pages' sizes and the next round's pair
//! titles (its masked-input size) vary between runs; the schedule, the
//! watches and everything before the first fold do not. See
//! [`FleetReport::without_measured`].

mod sim;
pub mod world;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};
use omega_constellation::federation::{self, FederationConfig};
use omega_constellation_core::rounds::RoundsConfig;
use serde::Serialize;

use self::sim::{store_with_devices, Sim};
use self::world::{World, DAY_SECS};

/// TVs in the fleet the node count is computed for.
pub const TARGET_FLEET: f64 = 400e6;
/// Share of a node's measured rate kept free at the peak hour.
pub const NODE_HEADROOM: f64 = 0.3;
/// Item 2's reused-connection figure on this machine (syncs/s per node).
pub const DEFAULT_NODE_SYNCS_PER_SEC: f64 = 4900.0;
/// Fleet sizes the federation is timed at (those up to `--devices`).
pub const FEDERATION_SIZES: [usize; 3] = [10_000, 100_000, 1_000_000];

/// What to simulate: `omega-sim fleet`'s options (each flag's default is
/// [`FleetOptions::default`]'s).
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct FleetOptions {
    /// Simulated TVs.
    #[arg(long, env = "OMEGA_FLEET_DEVICES", default_value_t = FleetOptions::default().devices)]
    pub devices: usize,
    /// Simulated days (day 0 is a Monday, 00:00 UTC; 1..=365).
    #[arg(long, env = "OMEGA_FLEET_DAYS", default_value_t = FleetOptions::default().days)]
    pub days: u64,
    /// Regions (1-8), each with its own time zone and taste mix.
    #[arg(long, env = "OMEGA_FLEET_REGIONS", default_value_t = FleetOptions::default().regions)]
    pub regions: usize,
    /// Seed of everything but the privacy noise (OpenDP's, from the OS).
    #[arg(long, env = "OMEGA_FLEET_SEED", default_value_t = FleetOptions::default().seed)]
    pub seed: u64,
    /// Catalog titles (before the spreading one).
    #[arg(long, default_value_t = FleetOptions::default().titles)]
    pub titles: usize,
    /// Taste clusters of the catalog.
    #[arg(long, default_value_t = FleetOptions::default().clusters)]
    pub clusters: usize,
    /// The day a new title arrives and starts to spread.
    #[arg(long, default_value_t = FleetOptions::default().trend_day)]
    pub trend_day: u64,
    /// The region (index) it spreads in.
    #[arg(long, default_value_t = FleetOptions::default().trend_region)]
    pub trend_region: u8,
    /// Probability that a watch in that region is the new title (once per
    /// TV).
    #[arg(long, default_value_t = FleetOptions::default().trend_share)]
    pub trend_share: f64,
    /// One node's syncs per second, for the node count (default: item 2's
    /// `quick_load 64 10` figure on this machine, reused connections).
    #[arg(long, env = "OMEGA_FLEET_NODE_SYNCS_PER_SEC", default_value_t = FleetOptions::default().node_syncs_per_sec)]
    pub node_syncs_per_sec: f64,
    /// Most TVs in an aggregation round (the node's default).
    #[arg(long, default_value_t = FleetOptions::default().cohort)]
    pub cohort: u16,
    /// Answers each round phase needs (the node's default).
    #[arg(long, default_value_t = FleetOptions::default().threshold)]
    pub threshold: u16,
    /// Show a progress bar on stderr (the command's `--quiet` turns it off).
    #[arg(skip = true)]
    pub progress: bool,
}

impl Default for FleetOptions {
    fn default() -> Self {
        FleetOptions {
            devices: 1_000_000,
            days: 3,
            regions: 4,
            seed: 42,
            titles: 1000,
            clusters: 8,
            trend_day: 1,
            trend_region: 0,
            trend_share: 0.3,
            node_syncs_per_sec: DEFAULT_NODE_SYNCS_PER_SEC,
            cohort: RoundsConfig::default().cohort,
            threshold: RoundsConfig::default().threshold,
            progress: true,
        }
    }
}

/// One folded round.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RoundFold {
    /// Region index.
    pub region: usize,
    /// Simulated minute.
    pub minute: u64,
    /// Contributions folded.
    pub contributors: u64,
    /// Titles published after it.
    pub published_titles: usize,
    /// Wall milliseconds of the node call that summed and folded it
    /// (unmasking included).
    pub ms: f64,
}

/// The federation job's cost at one fleet size.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FederationWork {
    /// Devices in the store.
    pub devices: usize,
    /// Device patterns the job read (TVs upload none: ARCHITECTURE.md).
    pub patterns_scanned: usize,
    /// Regions it went through.
    pub regions: usize,
}

/// BENCHMARKS.md's `fleet` keys, and the figures behind them.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FleetReport {
    pub devices: usize,
    pub days: u64,
    pub regions: usize,
    pub seed: u64,
    /// Wall seconds of the whole command.
    pub wall_s: f64,
    /// Peak resident memory (VmHWM), MiB.
    pub rss_mb: f64,
    /// Syncs per second at the server tier over the run (simulated time).
    pub syncs_per_s_mean: f64,
    /// In the busiest simulated hour.
    pub syncs_per_s_peak: f64,
    pub up_bytes_per_device_day: f64,
    pub down_bytes_per_device_day: f64,
    pub trend_reach_minutes_p50: Option<f64>,
    pub trend_reach_minutes_p90: Option<f64>,
    /// `{fleet size: ms}` of one federation run.
    pub federation_ms: BTreeMap<usize, f64>,
    pub nodes_for_400m: u64,
    // Beyond BENCHMARKS.md's keys:
    /// Per UTC hour, mean over the days: syncs per second.
    pub syncs_per_s_by_hour: Vec<f64>,
    /// Per UTC hour: syncs that carried something (run through the node).
    pub run_syncs_per_s_by_hour: Vec<f64>,
    pub syncs_total: u64,
    /// Syncs run through the node's code.
    pub syncs_run: u64,
    /// Syncs counted but elided (module docs).
    pub syncs_elided: u64,
    pub sync_errors: u64,
    /// Node shell time per run sync, codec included, µs.
    pub node_us_per_sync: f64,
    /// Catalog-page answers (the spreading title), bytes per device.
    pub catalog_down_bytes_per_device: f64,
    /// Requests carrying a round message, bytes per device per day.
    pub round_up_bytes_per_device_day: f64,
    pub watches_per_device_day: f64,
    pub trend_region: u8,
    /// Simulated minute the spreading title joined the catalog.
    pub trend_injected_minute: u64,
    pub trend_watches: u64,
    /// Minutes from its arrival to the first fleet version naming it.
    pub trend_published_minutes: Option<f64>,
    pub rounds: Vec<RoundFold>,
    pub rounds_declined: u64,
    /// Devices that ever held a round client.
    pub round_members: usize,
    /// `{fleet size: work}` of the federation runs timed.
    pub federation_work: BTreeMap<usize, FederationWork>,
    pub node_syncs_per_sec: f64,
    pub node_headroom: f64,
    /// syncs_per_s_peak scaled to 400 million TVs.
    pub syncs_per_s_peak_400m: f64,
    pub nodes_for_400m_no_headroom: u64,
    /// Bytes of one simulated device's state.
    pub device_state_bytes: usize,
    /// Fleet-cursor checks against the TV core's `FleetKnowledge`.
    pub checked_cursors: u64,
}

impl FleetReport {
    /// The report without what the machine measured (times, memory), for
    /// comparing two runs with one seed.
    pub fn without_measured(&self) -> FleetReport {
        let mut r = self.clone();
        r.wall_s = 0.0;
        r.rss_mb = 0.0;
        r.node_us_per_sync = 0.0;
        r.federation_ms.values_mut().for_each(|v| *v = 0.0);
        r.rounds.iter_mut().for_each(|f| f.ms = 0.0);
        r
    }
}

/// Runs the fleet (module docs).
pub fn run(opts: &FleetOptions) -> Result<FleetReport> {
    let start = Instant::now();
    anyhow::ensure!(opts.devices >= 1, "--devices must be at least 1");
    anyhow::ensure!(opts.days >= 1 && opts.days <= 365, "--days must be 1..=365");
    anyhow::ensure!(
        opts.node_syncs_per_sec > 0.0,
        "--node-syncs-per-sec must be positive"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&opts.trend_share),
        "--trend-share must be a probability (0..=1)"
    );
    let world = World::new(opts.seed, opts.regions, opts.titles, opts.clusters)?;
    let progress = if opts.progress {
        let p = ProgressBar::new(0);
        p.set_style(
            ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} simulated minutes ({eta})")
                .map_err(|e| anyhow::anyhow!("progress style: {e}"))?,
        );
        p.set_message("fleet");
        p
    } else {
        ProgressBar::hidden()
    };
    let mut sim = Sim::new(opts, &world)?;
    sim.run(&progress)?;
    let (federation_ms, federation_work) = federation_cost(opts, &world, &sim)?;
    let t = &sim.totals;
    let n = opts.devices as f64;
    let days = opts.days as f64;
    let seconds = days * DAY_SECS as f64;
    let total = t.syncs_run + t.syncs_elided;
    let peak_hour = t.syncs_by_hour.iter().copied().max().unwrap_or(0);
    let per_hour = |v: &[u64]| -> Vec<f64> {
        (0..24)
            .map(|h| {
                let sum: u64 = v.iter().skip(h).step_by(24).sum();
                sum as f64 / days / 3600.0
            })
            .collect()
    };
    let peak = peak_hour as f64 / 3600.0;
    let peak_400m = peak * TARGET_FLEET / n;
    let minutes = |ms: u64| ms as f64 / 60_000.0;
    Ok(FleetReport {
        devices: opts.devices,
        days: opts.days,
        regions: opts.regions,
        seed: opts.seed,
        wall_s: start.elapsed().as_secs_f64(),
        rss_mb: crate::load::local::proc_status_mb("/proc/self/status", "VmHWM:").unwrap_or(0.0),
        syncs_per_s_mean: total as f64 / seconds,
        syncs_per_s_peak: peak,
        up_bytes_per_device_day: t.up_bytes as f64 / n / days,
        down_bytes_per_device_day: t.down_bytes as f64 / n / days,
        trend_reach_minutes_p50: t.reach[0].map(minutes),
        trend_reach_minutes_p90: t.reach[1].map(minutes),
        federation_ms,
        nodes_for_400m: (peak_400m / (opts.node_syncs_per_sec * (1.0 - NODE_HEADROOM))).ceil()
            as u64,
        syncs_per_s_by_hour: per_hour(&t.syncs_by_hour),
        run_syncs_per_s_by_hour: per_hour(&t.run_by_hour),
        syncs_total: total,
        syncs_run: t.syncs_run,
        syncs_elided: t.syncs_elided,
        sync_errors: t.sync_errors,
        node_us_per_sync: t.node_ns as f64 / 1000.0 / t.syncs_run.max(1) as f64,
        catalog_down_bytes_per_device: t.catalog_down_bytes as f64 / n,
        round_up_bytes_per_device_day: t.round_up_bytes as f64 / n / days,
        watches_per_device_day: t.watches as f64 / n / days,
        trend_region: opts.trend_region,
        trend_injected_minute: t.inject_ms / 60_000,
        trend_watches: t.trend_watches,
        trend_published_minutes: t
            .trend_published_ms
            .map(|p| minutes(p.saturating_sub(t.inject_ms))),
        rounds: t.folds.clone(),
        rounds_declined: t.declined,
        round_members: t.members,
        federation_work,
        node_syncs_per_sec: opts.node_syncs_per_sec,
        node_headroom: NODE_HEADROOM,
        syncs_per_s_peak_400m: peak_400m,
        nodes_for_400m_no_headroom: (peak_400m / opts.node_syncs_per_sec).ceil() as u64,
        device_state_bytes: std::mem::size_of::<sim::Device>(),
        checked_cursors: t.checked_cursors,
    })
}

/// Times the node's federation job (`federation::run`, the periodic job of
/// DESIGN.md) over stores of each size in [`FEDERATION_SIZES`] up to
/// `--devices` (the run's own store at its size; smaller ones built with
/// one real sync per device). Fastest of three runs.
fn federation_cost(
    opts: &FleetOptions,
    world: &World,
    sim: &Sim<'_>,
) -> Result<(BTreeMap<usize, f64>, BTreeMap<usize, FederationWork>)> {
    let mut sizes: Vec<usize> = FEDERATION_SIZES
        .into_iter()
        .filter(|&s| s < opts.devices)
        .collect();
    sizes.push(opts.devices);
    let mut ms = BTreeMap::new();
    let mut work = BTreeMap::new();
    let config = FederationConfig::default();
    for size in sizes {
        let built;
        let store = if size == opts.devices {
            &sim.node.store
        } else {
            built = store_with_devices(world, u32::try_from(size)?)?;
            &built
        };
        let mut best = f64::INFINITY;
        let mut reports = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            reports = federation::run(store, &config)?;
            best = best.min(started.elapsed().as_secs_f64() * 1000.0);
        }
        ms.insert(size, best);
        work.insert(
            size,
            FederationWork {
                devices: size,
                patterns_scanned: reports.iter().map(|r| r.stats.input_patterns).sum(),
                regions: reports.len(),
            },
        );
    }
    Ok((ms, work))
}

/// The human summary.
pub fn render(r: &FleetReport) -> String {
    let mut s = String::new();
    let opt = |v: Option<f64>| v.map_or("not reached".to_string(), |m| format!("{m:.0} min"));
    let rows: Vec<(&str, String)> = vec![
        (
            "run",
            format!(
                "{} devices, {} days, {} regions, seed {}",
                r.devices, r.days, r.regions, r.seed
            ),
        ),
        (
            "cost here",
            format!("{:.1} s wall, {:.0} MiB peak RSS", r.wall_s, r.rss_mb),
        ),
        (
            "syncs/s (server tier)",
            format!(
                "mean {:.0}, peak hour {:.0}; {} syncs, {} run through the node, {} elided",
                r.syncs_per_s_mean, r.syncs_per_s_peak, r.syncs_total, r.syncs_run, r.syncs_elided
            ),
        ),
        (
            "bytes per device per day",
            format!(
                "up {:.0}, down {:.0} (catalog page {:.0} once)",
                r.up_bytes_per_device_day,
                r.down_bytes_per_device_day,
                r.catalog_down_bytes_per_device
            ),
        ),
        (
            "spreading title",
            format!(
                "published after {}; reach 50 % {}, 90 % {}",
                opt(r.trend_published_minutes),
                opt(r.trend_reach_minutes_p50),
                opt(r.trend_reach_minutes_p90)
            ),
        ),
        (
            "federation job",
            r.federation_ms
                .iter()
                .map(|(n, ms)| format!("{n} devices {ms:.2} ms"))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "rounds folded",
            r.rounds
                .iter()
                .map(|f| format!("r{} {} inputs {:.0} ms", f.region, f.contributors, f.ms))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        (
            "nodes for 400 M TVs",
            format!(
                "{} ({} without headroom) at {:.0} syncs/s per node, {:.0} % headroom, peak {:.0} syncs/s",
                r.nodes_for_400m,
                r.nodes_for_400m_no_headroom,
                r.node_syncs_per_sec,
                r.node_headroom * 100.0,
                r.syncs_per_s_peak_400m
            ),
        ),
    ];
    for (k, v) in rows {
        let _ = writeln!(s, "{k:<26} {v}");
    }
    let _ = writeln!(s, "syncs/s by UTC hour:");
    for (h, v) in r.syncs_per_s_by_hour.iter().enumerate() {
        let _ = writeln!(
            s,
            "  {h:02}h {v:>10.1}   (run through the node {:>8.1})",
            r.run_syncs_per_s_by_hour.get(h).copied().unwrap_or(0.0)
        );
    }
    s
}
