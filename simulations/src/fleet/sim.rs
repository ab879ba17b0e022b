//! The fleet's event loop in virtual time (see the module docs of
//! [`super`]): compact devices, the real node shell over a [`MemoryStore`],
//! round clients for the devices the node invites.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use omega_brain_core::fleet::MAX_FLEET_TITLES;
use omega_brain_core::round_client::{
    catalog_slots, PrivacyState, RoundClientConfig, RoundCredentials,
};
use omega_brain_core::{BrainState, Episode, FleetKnowledge, RoundClient};
use omega_constellation::store::{MemoryStore, PatternStore};
use omega_constellation::sync::{
    self as node_sync, Learning, LearningConfig, SyncConfig, SyncCore,
};
use omega_privacy::Budget;
use omega_protocol::codec;
use omega_protocol::limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
use omega_protocol::{
    CatalogEntry, DeviceId, FleetCursor, FleetPage, NodeToTv, PatternDelta, Region, SyncKind,
    SyncRequest, TvToNode, ViewingContext, ViewingEvent,
};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;

use super::world::{draw, unit, Stream, Traits, World, DAY_SECS};
use super::{FleetOptions, RoundFold};
use crate::eval::federated::{RoundProgress, SimDevices};

const MINUTE_MS: u64 = 60_000;
const HOUR_MS: u64 = 3_600_000;
/// The next sync after an answer that said more pages follow.
const PAGING_MS: u64 = 1_000;
/// A device's own sync interval when its sync is elided, as the node's
/// default `next_sync_secs`.
const SLOT_SECS: (u64, u64) = (300, 900);
/// The next sync after an error answer.
const ERROR_RETRY_MS: u64 = 300_000;
/// Watches a device remembers (its episode ring, in miniature).
pub const RING: usize = 8;
/// Ring entries: a title index with this bit for a successful watch.
const SUCCESS_BIT: u16 = 0x8000;
/// Devices whose fleet cursor is also kept by the TV core's own
/// [`FleetKnowledge`] as a check of the compact one: one in this many.
const CHECK_EVERY: u32 = 997;

const SYNCED: u8 = 1;
const HOLDS_TREND: u8 = 2;
const WATCHED_TREND: u8 = 4;

/// One simulated TV (48 bytes; see the module docs of [`super`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct Device {
    catalog_version: u32,
    fleet_version: u32,
    fleet_offset: u32,
    global_version: u32,
    /// Episodes so far (the next one's seq).
    seq: u32,
    /// Own slot draws so far.
    slot: u32,
    /// The next watch: day, session of that day, watch of that session.
    watch_day: u16,
    watch_session: u8,
    watch_k: u8,
    region: u8,
    cluster: u8,
    flags: u8,
    /// The last [`RING`] watches (title index, [`SUCCESS_BIT`]).
    ring: [u16; RING],
}

/// A device the node invited into a round: the TV core's round client.
struct Member {
    client: RoundClient,
    credentials: RoundCredentials,
    keys: StdRng,
    /// The node's last round message, answered at the next sync.
    inbox: Option<NodeToTv>,
    /// The round it is in, until told its outcome.
    engaged: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Watch,
    Sync,
}

#[derive(Debug, Clone, Copy)]
struct Ev {
    t: u64,
    dev: u32,
    kind: Kind,
}

/// What is tracked per region of the node's learning.
#[derive(Debug, Clone, Default)]
struct Track {
    /// Rounds ended and folded; when the last one ended.
    progress: RoundProgress,
    contributions: u64,
    open: bool,
    join: bool,
    session: Option<u64>,
    invited: u32,
    pub_version: u64,
    pub_len: usize,
    /// Bytes of the last idle request and answer (no round, page or
    /// pattern): what an elided sync would have cost.
    idle_up: u64,
    idle_down: u64,
}

/// Counters the report is made from.
#[derive(Debug, Default)]
pub struct Totals {
    pub syncs_by_hour: Vec<u64>,
    pub run_by_hour: Vec<u64>,
    pub syncs_run: u64,
    pub syncs_elided: u64,
    pub up_bytes: u64,
    pub down_bytes: u64,
    pub catalog_down_bytes: u64,
    pub round_up_bytes: u64,
    pub watches: u64,
    pub trend_watches: u64,
    pub sync_errors: u64,
    pub declined: u64,
    pub node_ns: u128,
    pub folds: Vec<RoundFold>,
    pub trend_published_ms: Option<u64>,
    pub reach: [Option<u64>; 2],
    pub inject_ms: u64,
    pub region_devices: Vec<u64>,
    pub members: usize,
    pub checked_cursors: u64,
}

/// The simulated server tier: the node shell over its in-memory store.
pub struct Node {
    core: SyncCore,
    pub store: MemoryStore,
    pub learning: Mutex<Learning>,
    rng: StdRng,
    pub catalog_version: u64,
}

/// The run.
pub struct Sim<'a> {
    opts: &'a FleetOptions,
    world: &'a World,
    pub node: Node,
    devices: Vec<Device>,
    members: HashMap<u32, Member>,
    checked: HashMap<u32, FleetKnowledge>,
    /// Per catalog version the TVs may hold: a TV state with that catalog
    /// (for the round's slots).
    catalogs: Vec<BrainState>,
    tracks: Vec<Track>,
    regions: Vec<Region>,
    wheel: Vec<Vec<Ev>>,
    spill: Vec<Ev>,
    minute: usize,
    end_ms: u64,
    interval_ms: u64,
    cohort: u16,
    injected: bool,
    trend_catalog: u64,
    holding: u64,
    pki: SimDevices,
    pub totals: Totals,
}

fn device_id(i: u32) -> Result<DeviceId> {
    Ok(DeviceId::new(format!("tv-{i:07}"))?)
}

impl<'a> Sim<'a> {
    /// A fleet of `opts.devices` TVs holding the catalog (without the
    /// spreading title), a node with no learned totals yet.
    pub fn new(opts: &'a FleetOptions, world: &'a World) -> Result<Self> {
        let regions: Vec<Region> = world.regions.iter().map(|r| r.name.clone()).collect();
        let store = MemoryStore::new();
        let trend = world.trend_title();
        let entries: Vec<CatalogEntry> =
            (0..trend).map(|t| world.entry(t)).collect::<Result<_>>()?;
        let packed: Vec<_> = entries
            .iter()
            .map(|e| CatalogEntry {
                item: e.item.clone(),
                embedding: e.embedding.to_i8(),
            })
            .collect();
        let catalog_version = store.upsert_catalog(&packed)?;
        let mut tv_catalog = BrainState::default();
        for e in &entries {
            tv_catalog.catalog.upsert(e);
        }
        tv_catalog.versions.catalog = catalog_version;
        let core = SyncCore::new(SyncConfig {
            allowed_regions: regions.iter().cloned().collect(),
            min_sync_interval_secs: 0,
            ..SyncConfig::default()
        })?;
        let pki = SimDevices::new()?;
        let mut config = LearningConfig::default();
        config.rounds.cohort = opts.cohort;
        config.rounds.threshold = opts.threshold;
        config.rounds.outcomes = config.rounds.outcomes.max(usize::from(opts.cohort));
        let learning = Learning::new(config, &regions, Vec::new(), Arc::clone(&pki.verifier))?;
        let days = opts.days;
        let end_ms = days * DAY_SECS * 1000;
        let minutes = (end_ms / MINUTE_MS) as usize;
        let n = u32::try_from(opts.devices).context("at most 2^32 devices")?;
        let mut devices = Vec::with_capacity(opts.devices);
        let mut region_devices = vec![0u64; regions.len()];
        let mut wheel: Vec<Vec<Ev>> = vec![Vec::new(); minutes];
        for i in 0..n {
            let t = world.traits(i);
            region_devices[usize::from(t.region)] += 1;
            devices.push(Device {
                catalog_version: u32::try_from(catalog_version)?,
                region: t.region,
                cluster: t.cluster,
                ..Device::default()
            });
            // The first sync within the node's largest interval.
            let first = draw(&[opts.seed, Stream::Slot as u64, u64::from(i), u64::MAX])
                % (SLOT_SECS.1 * 1000);
            wheel[(first / MINUTE_MS) as usize].push(Ev {
                t: first,
                dev: i,
                kind: Kind::Sync,
            });
        }
        let trend_region = usize::from(opts.trend_region);
        anyhow::ensure!(
            trend_region < regions.len(),
            "--trend-region is not a region"
        );
        // The spreading title arrives at 18:00 local time in its region.
        let tz = world.regions[trend_region].tz_hours;
        let inject_ms =
            (opts.trend_day * DAY_SECS + ((18 - tz).rem_euclid(24) as u64) * 3600) * 1000;
        let mut sim = Sim {
            opts,
            world,
            node: Node {
                core,
                store,
                learning: Mutex::new(learning),
                rng: StdRng::seed_from_u64(opts.seed ^ 0x6e6f_6465),
                catalog_version,
            },
            devices,
            members: HashMap::new(),
            checked: HashMap::new(),
            catalogs: vec![tv_catalog],
            tracks: vec![Track::default(); regions.len()],
            regions,
            wheel,
            spill: Vec::new(),
            minute: 0,
            end_ms,
            interval_ms: config.interval_ms,
            cohort: config.rounds.cohort,
            injected: false,
            trend_catalog: u64::MAX,
            holding: 0,
            pki,
            totals: Totals {
                syncs_by_hour: vec![0; (days * 24) as usize],
                run_by_hour: vec![0; (days * 24) as usize],
                inject_ms,
                region_devices,
                ..Totals::default()
            },
        };
        for i in 0..n {
            sim.schedule_watch(i)?;
        }
        Ok(sim)
    }

    fn push(&mut self, ev: Ev) {
        if ev.t >= self.end_ms {
            return;
        }
        let m = (ev.t / MINUTE_MS) as usize;
        if m <= self.minute {
            self.spill.push(ev);
        } else {
            self.wheel[m].push(ev);
        }
    }

    /// Runs every simulated minute.
    pub fn run(&mut self, progress: &ProgressBar) -> Result<()> {
        progress.set_length(self.wheel.len() as u64);
        for m in 0..self.wheel.len() {
            self.minute = m;
            let now = m as u64 * MINUTE_MS;
            if !self.injected && now >= self.totals.inject_ms {
                self.inject()?;
            }
            // Phase deadlines pass on the elided syncs too: a timer tick.
            let started = Instant::now();
            self.node.learning.lock().tick(now);
            node_sync::store_totals(&self.node.learning, &self.node.store);
            self.observe(now, started);
            let mut evs = std::mem::take(&mut self.wheel[m]);
            while !evs.is_empty() {
                evs.sort_unstable_by_key(|e| (e.t, e.kind, e.dev));
                let mut batch = Vec::new();
                for e in &evs {
                    match e.kind {
                        Kind::Watch => self.watch(e.dev, e.t)?,
                        Kind::Sync => self.offer(e.dev, e.t, &mut batch)?,
                    }
                }
                if !batch.is_empty() {
                    self.sync_batch(batch)?;
                }
                evs = std::mem::take(&mut self.spill);
            }
            if m % 60 == 59 {
                progress.set_position(m as u64 + 1);
            }
        }
        progress.finish_and_clear();
        self.totals.members = self.members.len();
        Ok(())
    }

    /// Adds the spreading title to the node's catalog.
    fn inject(&mut self) -> Result<()> {
        let e = self.world.entry(self.world.trend_title())?;
        let v = self.node.store.upsert_catalog(&[CatalogEntry {
            item: e.item.clone(),
            embedding: e.embedding.to_i8(),
        }])?;
        let mut st = self.catalogs[0].clone();
        st.catalog.upsert(&e);
        st.versions.catalog = v;
        self.catalogs.push(st);
        self.node.catalog_version = v;
        self.trend_catalog = v;
        self.injected = true;
        Ok(())
    }

    /// Notes what the last node call (started at `started`) changed: a
    /// round's end or fold, the phase, the publication.
    fn observe(&mut self, now: u64, started: Instant) {
        let l = self.node.learning.lock();
        for (r, s) in l.stats().into_iter().enumerate() {
            let Some(track) = self.tracks.get_mut(r) else {
                continue;
            };
            if track.progress.note(&s.rounds, now) {
                self.totals.folds.push(RoundFold {
                    region: r,
                    minute: now / MINUTE_MS,
                    contributors: s.contributions.saturating_sub(track.contributions),
                    published_titles: s.published_titles,
                    ms: started.elapsed().as_secs_f64() * 1000.0,
                });
            }
            track.contributions = s.contributions;
            track.open = s.phase.is_some();
            track.join = s.phase.as_deref() == Some("Join");
            track.pub_version = s.fleet_version;
            track.pub_len = s.published_titles;
            if r == usize::from(self.opts.trend_region)
                && self.totals.trend_published_ms.is_none()
                && self.injected
            {
                let id = &self.world.ids[usize::from(self.world.trend_title())];
                if l.publication(&s.region)
                    .is_some_and(|p| p.titles.iter().any(|t| &t.id == id))
                {
                    self.totals.trend_published_ms = Some(now);
                }
            }
        }
    }

    fn traits(&self, i: u32) -> Traits {
        let d = &self.devices[i as usize];
        Traits {
            region: d.region,
            cluster: d.cluster,
        }
    }

    /// Schedules device `i`'s next watch from its cursor.
    fn schedule_watch(&mut self, i: u32) -> Result<()> {
        let days = self.opts.days;
        let region = self.devices[i as usize].region;
        loop {
            let d = self.devices[i as usize];
            if u64::from(d.watch_day) >= days {
                return Ok(());
            }
            let sessions = self.world.sessions(i, region, u64::from(d.watch_day));
            let dev = &mut self.devices[i as usize];
            match sessions.get(usize::from(d.watch_session)) {
                Some(&(start, end)) => {
                    let t = self.world.watch_time(i, start, u32::from(d.watch_k));
                    if t < end {
                        self.push(Ev {
                            t: t * 1000,
                            dev: i,
                            kind: Kind::Watch,
                        });
                        return Ok(());
                    }
                    dev.watch_session += 1;
                    dev.watch_k = 0;
                }
                None => {
                    dev.watch_day += 1;
                    dev.watch_session = 0;
                    dev.watch_k = 0;
                }
            }
        }
    }

    /// Device `i` watches something at `t`.
    fn watch(&mut self, i: u32, t: u64) -> Result<()> {
        let traits = self.traits(i);
        let d = self.devices[i as usize];
        let sessions = self.world.sessions(i, d.region, u64::from(d.watch_day));
        let &(start, _) = sessions
            .get(usize::from(d.watch_session))
            .context("a watch outside its sessions")?;
        let mut w = self.world.watch(i, traits, start, u32::from(d.watch_k));
        let s = self.opts.seed;
        let trend = self.injected
            && d.region == self.opts.trend_region
            && u64::from(d.catalog_version) >= self.trend_catalog
            && d.flags & WATCHED_TREND == 0
            && unit(&[s, Stream::Trend as u64, u64::from(i), t]) < self.opts.trend_share;
        let dev = &mut self.devices[i as usize];
        if trend {
            w.title = self.world.trend_title();
            w.fraction = 0.9;
            dev.flags |= WATCHED_TREND;
            self.totals.trend_watches += 1;
        }
        let success = if w.fraction >= omega_protocol::SUCCESS_THRESHOLD {
            SUCCESS_BIT
        } else {
            0
        };
        dev.ring[dev.seq as usize % RING] = w.title | success;
        dev.seq += 1;
        dev.watch_k = dev.watch_k.saturating_add(1);
        self.totals.watches += 1;
        self.schedule_watch(i)
    }

    /// The device's own next slot after `t` (an elided sync's successor).
    fn slot(&mut self, i: u32, t: u64) -> u64 {
        let d = &mut self.devices[i as usize];
        d.slot += 1;
        let span = SLOT_SECS.1 - SLOT_SECS.0 + 1;
        let secs = SLOT_SECS.0
            + draw(&[
                self.opts.seed,
                Stream::Slot as u64,
                u64::from(i),
                u64::from(d.slot),
            ]) % span;
        t + secs * 1000
    }

    fn count_elided(&mut self, r: usize, t: u64) {
        let track = &self.tracks[r];
        self.totals.syncs_elided += 1;
        self.totals.up_bytes += track.idle_up;
        self.totals.down_bytes += track.idle_down;
        self.totals.syncs_by_hour[(t / HOUR_MS) as usize] += 1;
    }

    /// Device `i`'s sync at `t`: into `batch`, or elided (module docs).
    fn offer(&mut self, i: u32, t: u64, batch: &mut Vec<(u64, u32)>) -> Result<()> {
        let d = self.devices[i as usize];
        let r = usize::from(d.region);
        let track = &self.tracks[r];
        let busy = self
            .members
            .get(&i)
            .is_some_and(|m| m.inbox.is_some() || m.engaged.is_some());
        let caught_up = u64::from(d.catalog_version) == self.node.catalog_version
            && (track.pub_version == 0
                || (u64::from(d.fleet_version) == track.pub_version
                    && d.fleet_offset as usize >= track.pub_len));
        let inviting = track.join && track.invited < u32::from(self.cohort);
        let due = self.node.learning.lock().wants_round(&self.regions[r], t);
        if busy || !caught_up || d.flags & SYNCED == 0 || inviting || due {
            batch.push((t, i));
            return Ok(());
        }
        if track.open {
            self.count_elided(r, t);
            let next = self.slot(i, t);
            self.push(Ev {
                t: next,
                dev: i,
                kind: Kind::Sync,
            });
            return Ok(());
        }
        // Nothing in the region changes before its next round is due or the
        // catalog changes: every slot until then is elided at once.
        let mut stop = self.end_ms;
        if let Some(e) = track.progress.ended_ms {
            stop = stop.min(e + self.interval_ms);
        }
        if !self.injected {
            stop = stop.min(self.totals.inject_ms);
        }
        let mut s = t;
        while s < stop {
            self.count_elided(r, s);
            s = self.slot(i, s);
        }
        self.push(Ev {
            t: s,
            dev: i,
            kind: Kind::Sync,
        });
        Ok(())
    }

    /// Device `i`'s episodes as the TV core holds them.
    fn brain(&self, i: u32, catalog_version: u64) -> Result<BrainState> {
        let d = &self.devices[i as usize];
        let mut st = BrainState::default();
        st.versions.catalog = catalog_version;
        let ctx = ViewingContext::new(20, 0)?;
        let held = (d.seq as usize).min(RING);
        for seq in (d.seq as usize - held)..d.seq as usize {
            let e = d.ring[seq % RING];
            let title = e & !SUCCESS_BIT;
            let fraction = if e & SUCCESS_BIT != 0 { 0.9 } else { 0.3 };
            st.push_episode(Episode {
                seq: seq as u64,
                event: ViewingEvent::new(
                    self.world.ids[usize::from(title)].clone(),
                    fraction,
                    seq as u64,
                    ctx,
                )?,
            });
        }
        Ok(st)
    }

    /// The syncs that go through the node: round answers in parallel, the
    /// node one at a time in time order, the answers applied.
    fn sync_batch(&mut self, batch: Vec<(u64, u32)>) -> Result<()> {
        // Round members answer the node's last message (the TV core's round
        // client: noise, keys, masks), in parallel.
        let mut working: Vec<(u64, u32, Member, BrainState)> = Vec::new();
        for &(t, i) in &batch {
            if self.members.get(&i).is_some_and(|m| m.inbox.is_some()) {
                let v = u64::from(self.devices[i as usize].catalog_version);
                let brain = self.brain(i, v)?;
                if let Some(m) = self.members.remove(&i) {
                    working.push((t, i, m, brain));
                }
            }
        }
        let catalogs = &self.catalogs;
        let answers: Vec<(u32, Option<TvToNode>, bool)> = working
            .par_iter_mut()
            .map(|(t, i, m, brain)| {
                let Some(msg) = m.inbox.clone() else {
                    return (*i, None, false);
                };
                let slots = match &msg {
                    NodeToTv::Invite { spec, .. } => catalogs
                        .iter()
                        .find(|c| c.versions.catalog == brain.versions.catalog)
                        .map_or_else(|| catalog_slots(spec, brain), |c| catalog_slots(spec, c)),
                    _ => Ok(HashMap::new()),
                };
                let answer = slots.and_then(|slots| {
                    m.client
                        .on_node(msg, brain, &slots, *t, &m.credentials, &mut m.keys)
                });
                match answer {
                    Ok(reply) => (*i, reply, false),
                    Err(_) => {
                        // Declined: the same message would be declined again.
                        m.inbox = None;
                        (*i, None, true)
                    }
                }
            })
            .collect();
        let mut rounds: HashMap<u32, Option<TvToNode>> = HashMap::new();
        for ((_, i, m, _), (j, reply, declined)) in working.into_iter().zip(answers) {
            debug_assert_eq!(i, j);
            self.totals.declined += u64::from(declined);
            rounds.insert(i, reply);
            self.members.insert(i, m);
        }
        for (t, i) in batch {
            let round = rounds.remove(&i).flatten();
            self.sync_one(t, i, round)?;
        }
        Ok(())
    }

    fn sync_one(&mut self, t: u64, i: u32, round: Option<TvToNode>) -> Result<()> {
        let d = self.devices[i as usize];
        let r = usize::from(d.region);
        let had_round = round.is_some();
        let req = SyncRequest {
            kind: SyncKind::Delta,
            base_version: 0,
            pattern_version: 0,
            global_version: u64::from(d.global_version),
            catalog_version: u64::from(d.catalog_version),
            region: self.regions[r].clone(),
            delta: PatternDelta::default(),
            round,
            fleet: FleetCursor {
                version: u64::from(d.fleet_version),
                offset: d.fleet_offset,
            },
        };
        let frame = codec::encode_request(&req)?;
        let device = device_id(i)?;
        let started = Instant::now();
        let answer = {
            let (body, _) = codec::unframe(&frame, MAX_REQUEST_FRAME)?;
            let packed = codec::decode_packed_request(body)?;
            let node = &mut self.node;
            let (resp, _) = node_sync::run(
                &mut node.core,
                &node.store,
                Some(&node.learning),
                &device,
                packed,
                t,
                &mut node.rng,
            );
            codec::encode_packed_response(&resp)?
        };
        self.totals.node_ns += started.elapsed().as_nanos();
        self.observe(t, started);
        let totals = &mut self.totals;
        totals.syncs_run += 1;
        totals.syncs_by_hour[(t / HOUR_MS) as usize] += 1;
        totals.run_by_hour[(t / HOUR_MS) as usize] += 1;
        totals.up_bytes += frame.len() as u64;
        totals.down_bytes += answer.len() as u64;
        if had_round {
            totals.round_up_bytes += frame.len() as u64;
        }
        let (body, _) = codec::unframe(&answer, MAX_RESPONSE_FRAME)?;
        let accepted = match codec::decode_response(body)? {
            Ok(a) => a,
            Err(_) => {
                self.totals.sync_errors += 1;
                self.push(Ev {
                    t: t + ERROR_RETRY_MS,
                    dev: i,
                    kind: Kind::Sync,
                });
                return Ok(());
            }
        };
        let idle = accepted.catalog.is_none()
            && accepted.fleet.is_none()
            && accepted.round.is_none()
            && accepted.global_patterns.is_empty()
            && !had_round;
        if idle {
            self.tracks[r].idle_up = frame.len() as u64;
            self.tracks[r].idle_down = answer.len() as u64;
        }
        let mut more = false;
        {
            let dev = &mut self.devices[i as usize];
            dev.flags |= SYNCED;
            dev.global_version = u32::try_from(accepted.global_version)?;
            if let Some(page) = &accepted.catalog {
                self.totals.catalog_down_bytes += answer.len() as u64;
                dev.catalog_version = u32::try_from(page.version)?;
                more |= page.more;
            }
        }
        if let Some(page) = &accepted.fleet {
            self.apply_fleet(i, t, page)?;
            more |= (page.offset as usize + page.titles.len()) < page.total_titles as usize;
        }
        self.round_answer(i, accepted.round)?;
        let next = if more {
            t + PAGING_MS
        } else {
            t + u64::from(accepted.next_sync_secs.max(1)) * 1000
        };
        self.push(Ev {
            t: next,
            dev: i,
            kind: Kind::Sync,
        });
        Ok(())
    }

    /// Keeps the node's round message for the device's next sync; a first
    /// invitation makes the device a round member (its certificate issued
    /// then).
    fn round_answer(&mut self, i: u32, msg: Option<NodeToTv>) -> Result<()> {
        if let Some(NodeToTv::Invite { spec, .. }) = &msg {
            let r = usize::from(self.devices[i as usize].region);
            let track = &mut self.tracks[r];
            if track.session != Some(spec.session.session) {
                track.session = Some(spec.session.session);
                track.invited = 0;
            }
            track.invited += 1;
            if !self.members.contains_key(&i) {
                let id = device_id(i)?;
                let credentials = self.pki.credentials(&id)?;
                let client = RoundClient::new(
                    RoundClientConfig::default(),
                    PrivacyState::new(Budget::default()),
                )?;
                let keys = StdRng::seed_from_u64(draw(&[
                    self.opts.seed,
                    Stream::Keys as u64,
                    u64::from(i),
                ]));
                self.members.insert(
                    i,
                    Member {
                        client,
                        credentials,
                        keys,
                        inbox: None,
                        engaged: None,
                    },
                );
            }
        }
        if let Some(m) = self.members.get_mut(&i) {
            match &msg {
                Some(NodeToTv::Invite { spec, .. }) => m.engaged = Some(spec.session.session),
                Some(NodeToTv::Step { session, .. }) => m.engaged = Some(*session),
                Some(NodeToTv::Finished { session, .. }) if m.engaged == Some(*session) => {
                    m.engaged = None
                }
                _ => {}
            }
            // A Finished is applied at once (the TV core's client takes it
            // with no reply).
            if let Some(NodeToTv::Finished { .. }) = &msg {
                let brain = BrainState::default();
                let r = m.client.on_node(
                    msg.clone().context("a message")?,
                    &brain,
                    &HashMap::new(),
                    0,
                    &m.credentials,
                    &mut m.keys,
                );
                if r.is_err() {
                    self.totals.declined += 1;
                }
                m.inbox = None;
            } else {
                m.inbox = msg;
            }
        }
        Ok(())
    }

    /// Applies a fleet page to the device's cursor as the TV core's
    /// [`FleetKnowledge::apply`] does, noting whether the device now holds
    /// the spreading title.
    fn apply_fleet(&mut self, i: u32, t: u64, page: &FleetPage) -> Result<()> {
        let trend_id = &self.world.ids[usize::from(self.world.trend_title())];
        let trend_region = self.opts.trend_region;
        let dev = &mut self.devices[i as usize];
        let fresh = page.version != u64::from(dev.fleet_version);
        let in_order = if fresh {
            page.offset == 0
        } else {
            page.offset == dev.fleet_offset
        };
        let held = if fresh { 0 } else { dev.fleet_offset as usize };
        if in_order && held + page.titles.len() <= MAX_FLEET_TITLES {
            if fresh {
                dev.fleet_version = u32::try_from(page.version)?;
                dev.fleet_offset = 0;
                if dev.flags & HOLDS_TREND != 0 {
                    dev.flags &= !HOLDS_TREND;
                    if dev.region == trend_region {
                        self.holding -= 1;
                    }
                }
            }
            dev.fleet_offset += page.titles.len() as u32;
            if dev.flags & HOLDS_TREND == 0 && page.titles.iter().any(|x| &x.id == trend_id) {
                dev.flags |= HOLDS_TREND;
                if dev.region == trend_region {
                    self.holding += 1;
                    let n = self.totals.region_devices[usize::from(trend_region)].max(1);
                    for (k, share) in [0.5, 0.9].into_iter().enumerate() {
                        if self.totals.reach[k].is_none() && self.holding as f64 >= share * n as f64
                        {
                            self.totals.reach[k] = Some(t.saturating_sub(self.totals.inject_ms));
                        }
                    }
                }
            }
        }
        if i.is_multiple_of(CHECK_EVERY) {
            let k = self.checked.entry(i).or_default();
            k.apply(page);
            let c = k.cursor();
            let dev = &self.devices[i as usize];
            if c.version != u64::from(dev.fleet_version) || c.offset != dev.fleet_offset {
                bail!(
                    "device {i}: compact fleet cursor ({}, {}) differs from the TV core's ({}, {})",
                    dev.fleet_version,
                    dev.fleet_offset,
                    c.version,
                    c.offset
                );
            }
            self.totals.checked_cursors += 1;
        }
        Ok(())
    }
}

/// A MemoryStore holding the catalog and `n` devices, each written by one
/// real sync through the node shell (for the federation cost at size `n`).
pub fn store_with_devices(world: &World, n: u32) -> Result<MemoryStore> {
    let store = MemoryStore::new();
    let entries: Vec<_> = (0..=world.trend_title())
        .map(|t| {
            world.entry(t).map(|e| CatalogEntry {
                item: e.item,
                embedding: e.embedding.to_i8(),
            })
        })
        .collect::<Result<_>>()?;
    let version = store.upsert_catalog(&entries)?;
    let regions: Vec<Region> = world.regions.iter().map(|r| r.name.clone()).collect();
    let mut core = SyncCore::new(SyncConfig {
        allowed_regions: regions.iter().cloned().collect(),
        min_sync_interval_secs: 0,
        ..SyncConfig::default()
    })?;
    let mut rng = StdRng::seed_from_u64(world.seed);
    for i in 0..n {
        let req = SyncRequest {
            kind: SyncKind::Delta,
            base_version: 0,
            pattern_version: 0,
            global_version: 0,
            catalog_version: version,
            region: regions[usize::from(world.traits(i).region)].clone(),
            delta: PatternDelta::default(),
            round: None,
            fleet: FleetCursor::default(),
        };
        let frame = codec::encode_request(&req)?;
        let (body, _) = codec::unframe(&frame, MAX_REQUEST_FRAME)?;
        let packed = codec::decode_packed_request(body)?;
        let (resp, _) =
            node_sync::run(&mut core, &store, None, &device_id(i)?, packed, 0, &mut rng);
        if let Err(e) = resp {
            bail!("device {i}'s sync was refused: {e}");
        }
    }
    Ok(store)
}
