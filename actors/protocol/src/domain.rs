//! Domain types shared by the TV and the constellation.
//!
//! These are what the rest of the code reasons about: validated identifiers,
//! the viewing context, patterns with full-precision [`Embedding`]s, catalog
//! items, and the sync exchange. What actually crosses the wire is the compact
//! mirror in [`crate::wire`], converted explicitly in both directions; a value
//! of a type in this module has passed validation.
//!
//! Invariant: nothing in a [`SyncRequest`] names a content item, a title, a
//! timestamp or the device itself (privacy rule 1 of DESIGN.md). The device is
//! known only from its certificate.

use serde::{Deserialize, Serialize};

pub use omega_privacy::round::{NodeToTv, TvToNode};

use crate::embedding::{Embedding, I8Embedding, TernaryEmbedding};
use crate::limits;

/// Why a domain value was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DomainError {
    /// An identifier (device, content, region) is empty, too long or has a
    /// character outside its allowed set.
    #[error("invalid {kind} {value:?}: {why}")]
    InvalidId {
        /// Which kind of identifier.
        kind: &'static str,
        /// The offending value, truncated to 80 characters.
        value: String,
        /// What rule it broke.
        why: &'static str,
    },
    /// A number is NaN, infinite or outside its range.
    #[error("{field} = {value} is out of range ({range})")]
    OutOfRange {
        /// The field's name.
        field: &'static str,
        /// The offending value, rendered.
        value: String,
        /// The allowed range, rendered.
        range: &'static str,
    },
    /// A text field is too long or holds control characters.
    #[error("invalid {field}: {why}")]
    InvalidText {
        /// The field's name.
        field: &'static str,
        /// What rule it broke.
        why: String,
    },
    /// A list holds more entries than the protocol allows.
    #[error("{field} has {len} entries, at most {max} allowed")]
    TooMany {
        /// The field's name.
        field: &'static str,
        /// Entries found.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An embedding is malformed.
    #[error("invalid embedding in {field}: {source}")]
    Embedding {
        /// Where the embedding was.
        field: &'static str,
        /// What is wrong with it.
        source: crate::embedding::EmbeddingError,
    },
}

fn check_id(
    kind: &'static str,
    value: &str,
    max: usize,
    allowed: fn(char) -> bool,
) -> Result<(), DomainError> {
    let err = |why| DomainError::InvalidId {
        kind,
        value: value.chars().take(80).collect(),
        why,
    };
    if value.is_empty() {
        return Err(err("empty"));
    }
    if value.len() > max {
        return Err(err("too long"));
    }
    if !value.chars().all(allowed) {
        return Err(err("character outside the allowed set"));
    }
    Ok(())
}

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:expr, $allowed:expr, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Validates and wraps `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, DomainError> {
                let value = value.into();
                check_id($kind, &value, $max, $allowed)?;
                let extra: fn(&str) -> Result<(), &'static str> = $extra;
                extra(&value).map_err(|why| DomainError::InvalidId {
                    kind: $kind,
                    value: value.chars().take(80).collect(),
                    why,
                })?;
                Ok(Self(value))
            }

            /// The identifier as text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = DomainError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::new(s)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

string_id!(
    /// A device's identity: the common name of its certificate. 1–64 characters
    /// of `[A-Za-z0-9._-]`, not starting with `.` or `-` (it is also a file name).
    DeviceId,
    "device id",
    limits::MAX_DEVICE_ID_LEN,
    |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'),
    |s| {
        if s.starts_with('.') || s.starts_with('-') {
            Err("starts with '.' or '-'")
        } else {
            Ok(())
        }
    }
);

string_id!(
    /// A catalog item's identifier, e.g. `ml100k:242`. 1–64 characters of
    /// `[A-Za-z0-9._:/-]`.
    ContentId,
    "content id",
    limits::MAX_CONTENT_ID_LEN,
    |c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/'),
    |_| Ok(())
);

string_id!(
    /// A coarse region name such as `eu-west` or `us`: 1–32 characters of
    /// `[a-z0-9_-]`.
    Region,
    "region",
    limits::MAX_REGION_LEN,
    |c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-'),
    |_| Ok(())
);

/// The region a TV declares unless it is configured otherwise, and the one
/// region a node's default allow-list serves.
pub const DEFAULT_REGION: &str = "eu-west";

impl Region {
    /// [`DEFAULT_REGION`] as a [`Region`].
    pub fn default_region() -> Region {
        Region(DEFAULT_REGION.to_string())
    }
}

/// Part of the day, from the local hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DayPart {
    /// 00:00–05:59.
    Night,
    /// 06:00–11:59.
    Morning,
    /// 12:00–17:59.
    Afternoon,
    /// 18:00–23:59.
    Evening,
}

impl DayPart {
    /// The part of the day an hour (0–23) falls in.
    pub fn from_hour(hour: u8) -> Result<Self, DomainError> {
        Ok(match hour {
            0..=5 => DayPart::Night,
            6..=11 => DayPart::Morning,
            12..=17 => DayPart::Afternoon,
            18..=23 => DayPart::Evening,
            _ => {
                return Err(DomainError::OutOfRange {
                    field: "hour",
                    value: hour.to_string(),
                    range: "0..=23",
                })
            }
        })
    }
}

/// Weekday or weekend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum DayKind {
    /// Monday to Friday.
    Weekday,
    /// Saturday and Sunday.
    Weekend,
}

/// The coarse context a pattern belongs to: part of day × weekday/weekend, 8
/// buckets. This is the only context that leaves the TV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContextBucket {
    /// Part of the day.
    pub day_part: DayPart,
    /// Weekday or weekend.
    pub day_kind: DayKind,
}

impl ContextBucket {
    /// Number of distinct buckets.
    pub const COUNT: u8 = 8;

    /// All buckets in index order.
    pub fn all() -> impl Iterator<Item = ContextBucket> {
        (0..Self::COUNT).filter_map(|i| Self::from_index(i).ok())
    }

    /// Dense index 0..8, the wire form.
    pub fn index(self) -> u8 {
        let p = match self.day_part {
            DayPart::Night => 0,
            DayPart::Morning => 1,
            DayPart::Afternoon => 2,
            DayPart::Evening => 3,
        };
        let k = match self.day_kind {
            DayKind::Weekday => 0,
            DayKind::Weekend => 4,
        };
        p + k
    }

    /// Inverse of [`ContextBucket::index`].
    pub fn from_index(i: u8) -> Result<Self, DomainError> {
        if i >= Self::COUNT {
            return Err(DomainError::OutOfRange {
                field: "context bucket",
                value: i.to_string(),
                range: "0..8",
            });
        }
        let day_part = [
            DayPart::Night,
            DayPart::Morning,
            DayPart::Afternoon,
            DayPart::Evening,
        ][usize::from(i % 4)];
        let day_kind = if i < 4 {
            DayKind::Weekday
        } else {
            DayKind::Weekend
        };
        Ok(Self { day_part, day_kind })
    }
}

/// When something is watched: local hour and day of week. Stays on the TV.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ViewingContext {
    /// Local hour, 0–23.
    pub hour: u8,
    /// Day of week, 0 = Monday … 6 = Sunday.
    pub weekday: u8,
}

impl ViewingContext {
    /// Validates hour and weekday.
    pub fn new(hour: u8, weekday: u8) -> Result<Self, DomainError> {
        DayPart::from_hour(hour)?;
        if weekday > 6 {
            return Err(DomainError::OutOfRange {
                field: "weekday",
                value: weekday.to_string(),
                range: "0..=6 (0 = Monday)",
            });
        }
        Ok(Self { hour, weekday })
    }

    /// The context at a UTC unix time (EVALUATION.md derives contexts this way).
    pub fn from_unix_utc(secs: u64) -> Self {
        let days = secs / 86_400;
        // 1970-01-01 was a Thursday (weekday 3 with Monday = 0).
        Self {
            hour: ((secs % 86_400) / 3600) as u8,
            weekday: ((days + 3) % 7) as u8,
        }
    }

    /// The coarse bucket of this context.
    pub fn bucket(self) -> ContextBucket {
        ContextBucket {
            day_part: DayPart::from_hour(self.hour).unwrap_or(DayPart::Night),
            day_kind: if self.weekday >= 5 {
                DayKind::Weekend
            } else {
                DayKind::Weekday
            },
        }
    }
}

/// A raw viewing event. Never leaves the TV.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewingEvent {
    /// What was watched.
    pub content_id: ContentId,
    /// Share of the title watched, 0.0–1.0; 0.7 and above is a successful watch.
    pub watched_fraction: f32,
    /// Unix seconds when watching started.
    pub timestamp_secs: u64,
    /// Local context.
    pub context: ViewingContext,
}

/// Watch fraction from which a view counts as a success.
pub const SUCCESS_THRESHOLD: f32 = 0.7;

impl ViewingEvent {
    /// Validates the fraction (finite, 0–1).
    pub fn new(
        content_id: ContentId,
        watched_fraction: f32,
        timestamp_secs: u64,
        context: ViewingContext,
    ) -> Result<Self, DomainError> {
        check_unit("watched_fraction", watched_fraction)?;
        Ok(Self {
            content_id,
            watched_fraction,
            timestamp_secs,
            context,
        })
    }

    /// Whether this view counts as a successful watch.
    pub fn is_success(&self) -> bool {
        self.watched_fraction >= SUCCESS_THRESHOLD
    }
}

pub(crate) fn check_unit(field: &'static str, v: f32) -> Result<(), DomainError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(DomainError::OutOfRange {
            field,
            value: v.to_string(),
            range: "0.0..=1.0",
        })
    }
}

/// Identifies one of a device's patterns (local to that device).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PatternId(pub u64);

/// What a TV shares about one of its tastes: an aggregate embedding, how often
/// it led to a successful watch, and how many watches it summarises.
///
/// `E` is the embedding's form: [`Embedding`] (f32, the TV's view) or
/// [`TernaryEmbedding`], the wire form the node keeps ([`PackedPatternSummary`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternSummary<E = Embedding> {
    /// The pattern's id on its device.
    pub id: PatternId,
    /// Coarse context.
    pub bucket: ContextBucket,
    /// Aggregate over several items (never a single title).
    pub embedding: E,
    /// Share of successful watches, 0.0–1.0.
    pub success_rate: f32,
    /// Number of watches folded into the pattern.
    pub samples: u32,
}

/// Changes to a device's patterns since a version the node acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PatternDelta<E = Embedding> {
    /// Patterns new since the base version.
    pub added: Vec<PatternSummary<E>>,
    /// Patterns changed since the base version.
    pub updated: Vec<PatternSummary<E>>,
    /// Patterns dropped since the base version.
    pub removed: Vec<PatternId>,
}

impl<E> Default for PatternDelta<E> {
    fn default() -> Self {
        Self {
            added: Vec::new(),
            updated: Vec::new(),
            removed: Vec::new(),
        }
    }
}

impl<E> PatternDelta<E> {
    /// Whether the delta carries no change.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.updated.is_empty() && self.removed.is_empty()
    }
}

/// What kind of sync a request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncKind {
    /// Apply the delta on top of `base_version`.
    Delta,
    /// The node should drop everything it holds for the device and take the
    /// delta's `added` as the device's whole state (after `ResyncRequired`, or
    /// the first sync). Larger snapshots continue with `Delta`s.
    Snapshot,
    /// Privacy rule 4: drop every pattern of this device.
    Forget,
}

/// One sync from a TV. No device id: the node takes it from the certificate.
/// `E`: the patterns' embedding form (see [`PatternSummary`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncRequest<E = Embedding> {
    /// The kind of sync.
    pub kind: SyncKind,
    /// The device pattern version the node last acknowledged (0 if none).
    pub base_version: u64,
    /// The device pattern version after applying this delta.
    pub pattern_version: u64,
    /// The global-pattern version the device holds.
    pub global_version: u64,
    /// The catalog version the device holds.
    pub catalog_version: u64,
    /// The device's region.
    pub region: Region,
    /// Pattern changes.
    pub delta: PatternDelta<E>,
    /// The device's answer in its region's aggregation round, if it is in
    /// one (secure-aggregation messages only: see omega-privacy's `round`).
    pub round: Option<TvToNode>,
    /// Where the device is in its region's published fleet knowledge.
    pub fleet: FleetCursor,
}

/// A fleet-wide pattern published by the constellation for a region.
/// `E`: the embedding's form, [`Embedding`] or the wire form
/// [`TernaryEmbedding`] ([`PackedGlobalPattern`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GlobalPattern<E = Embedding> {
    /// Stable id within the region.
    pub id: u64,
    /// Coarse context.
    pub bucket: ContextBucket,
    /// Quality-weighted aggregate of device patterns.
    pub embedding: E,
    /// Weighted success rate, 0.0–1.0.
    pub success_rate: f32,
    /// Distinct devices supporting it (at least k when published).
    pub support: u32,
    /// Watches summarised across those devices.
    pub samples: u32,
}

/// Something trending in a region, derived by the node from patterns (never
/// from content ids reported by devices: devices report none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrendSignal {
    /// The catalog item closest to a rising pattern.
    pub content_id: ContentId,
    /// The context in which it rises.
    pub bucket: ContextBucket,
    /// Strength, 0.0–1.0.
    pub score: f32,
}

/// A content item as operators describe it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogItem {
    /// Identifier.
    pub id: ContentId,
    /// Title.
    pub title: String,
    /// Genres.
    #[serde(default)]
    pub genres: Vec<String>,
    /// Release year.
    #[serde(default)]
    pub year: Option<u16>,
    /// Free-text description.
    #[serde(default)]
    pub description: String,
}

fn check_text(
    field: &'static str,
    v: &str,
    max: usize,
    allow_empty: bool,
) -> Result<(), DomainError> {
    let why = if v.len() > max {
        Some(format!("{} bytes, at most {max}", v.len()))
    } else if !allow_empty && v.trim().is_empty() {
        Some("empty".to_string())
    } else if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        Some("contains control characters".to_string())
    } else {
        None
    };
    match why {
        Some(why) => Err(DomainError::InvalidText { field, why }),
        None => Ok(()),
    }
}

pub(crate) fn check_len(field: &'static str, len: usize, max: usize) -> Result<(), DomainError> {
    if len > max {
        Err(DomainError::TooMany { field, len, max })
    } else {
        Ok(())
    }
}

impl CatalogItem {
    /// Checks lengths, characters and the year.
    pub fn validate(&self) -> Result<(), DomainError> {
        check_text("title", &self.title, limits::MAX_TITLE_LEN, false)?;
        check_text(
            "description",
            &self.description,
            limits::MAX_DESCRIPTION_LEN,
            true,
        )?;
        check_len("genres", self.genres.len(), limits::MAX_GENRES)?;
        for g in &self.genres {
            check_text("genre", g, limits::MAX_GENRE_LEN, false)?;
        }
        if let Some(y) = self.year {
            if !(1870..=2100).contains(&y) {
                return Err(DomainError::OutOfRange {
                    field: "year",
                    value: y.to_string(),
                    range: "1870..=2100",
                });
            }
        }
        Ok(())
    }

    /// The text the embedder sees for this item.
    pub fn embedding_text(&self) -> String {
        let mut s = self.title.clone();
        if !self.genres.is_empty() {
            s.push_str(". ");
            s.push_str(&self.genres.join(", "));
        }
        if !self.description.is_empty() {
            s.push_str(". ");
            s.push_str(&self.description);
        }
        s
    }
}

/// A catalog item with its embedding, as the node hands it to TVs.
/// `E`: the embedding's form, [`Embedding`] or the wire form
/// [`I8Embedding`] ([`PackedCatalogEntry`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogEntry<E = Embedding> {
    /// The item.
    pub item: CatalogItem,
    /// Its MiniLM embedding.
    pub embedding: E,
}

/// One bounded page of catalog changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CatalogPage<E = Embedding> {
    /// The catalog version after applying this page.
    pub version: u64,
    /// Items added or changed.
    pub upserts: Vec<CatalogEntry<E>>,
    /// Items withdrawn.
    pub removed: Vec<ContentId>,
    /// Whether more pages follow (the device asks again from `version`).
    pub more: bool,
}

impl<E> Default for CatalogPage<E> {
    fn default() -> Self {
        Self {
            version: 0,
            upserts: Vec::new(),
            removed: Vec::new(),
            more: false,
        }
    }
}

/// A successful sync's answer. `G`, `C`: the embedding forms of the globals
/// and of the catalog entries (see [`GlobalPattern`], [`CatalogEntry`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SyncAccepted<G = Embedding, C = Embedding> {
    /// The device pattern version the node now holds.
    pub acked_version: u64,
    /// The region's current global version.
    pub global_version: u64,
    /// When true the device drops its global patterns before applying these.
    pub global_reset: bool,
    /// Global patterns changed since the device's global version.
    pub global_patterns: Vec<GlobalPattern<G>>,
    /// Global patterns withdrawn since the device's global version.
    pub global_removed: Vec<u64>,
    /// Trend signals for the device's region.
    pub trends: Vec<TrendSignal>,
    /// One page of catalog changes, if any.
    pub catalog: Option<CatalogPage<C>>,
    /// Seconds until the next sync: the node's lever against overload.
    pub next_sync_secs: u32,
    /// The node's next message in the device's aggregation round, if any.
    pub round: Option<NodeToTv>,
    /// One page of the region's fleet knowledge, when the device is not
    /// caught up with it.
    pub fleet: Option<FleetPage>,
}

/// How far a device has read its region's fleet knowledge: the version it
/// holds and the titles of it received so far (`offset`). `{0, 0}`: none.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetCursor {
    /// The version being read (0: none yet).
    pub version: u64,
    /// Titles of that version received.
    pub offset: u32,
}

/// One title of a region's fleet knowledge: what the fleet's private sums
/// say about it (noisy, thresholded counts over many devices; never one
/// device's data).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetTitle {
    /// The title.
    pub id: ContentId,
    /// How many watches of it the region's sums hold (noisy, > 0).
    pub total: f32,
    /// Titles watched close to it, with the noisy count of such pairs,
    /// largest first.
    pub partners: Vec<(ContentId, f32)>,
}

/// One page of a region's fleet knowledge, titles in the node's order
/// (most watched first). A device holding `version` asks from its offset;
/// a new version starts again at 0.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FleetPage {
    /// The version these titles belong to.
    pub version: u64,
    /// Index of the first title of this page.
    pub offset: u32,
    /// Titles in this version.
    pub total_titles: u32,
    /// The titles.
    pub titles: Vec<FleetTitle>,
}

/// A typed refusal of a sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum SyncError {
    /// Too many syncs (per device or in flight): try again later.
    #[error("retry after {secs} s")]
    RetryAfter {
        /// Seconds to wait.
        secs: u32,
    },
    /// The device is not allowed (unknown or revoked identity).
    #[error("unauthorized: {reason}")]
    Unauthorized {
        /// Why.
        reason: String,
    },
    /// The request is malformed or violates a limit.
    #[error("bad request: {reason}")]
    BadRequest {
        /// Why.
        reason: String,
    },
    /// The node lacks the device's base version: upload a full snapshot.
    #[error("resync required (node holds pattern version {node_version})")]
    ResyncRequired {
        /// The version the node holds for the device (0 if none).
        node_version: u64,
    },
    /// The request's protocol version is not spoken here.
    #[error("unsupported protocol version {got} (supported {min}..={max})")]
    UnsupportedVersion {
        /// Version received.
        got: u16,
        /// Lowest supported.
        min: u16,
        /// Highest supported.
        max: u16,
    },
    /// The node failed internally; nothing was applied.
    #[error("internal error: {reason}")]
    Internal {
        /// Why.
        reason: String,
    },
}

impl SyncError {
    /// A short stable name for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SyncError::RetryAfter { .. } => "retry_after",
            SyncError::Unauthorized { .. } => "unauthorized",
            SyncError::BadRequest { .. } => "bad_request",
            SyncError::ResyncRequired { .. } => "resync_required",
            SyncError::UnsupportedVersion { .. } => "unsupported_version",
            SyncError::Internal { .. } => "internal",
        }
    }
}

/// The node's answer to one sync.
pub type SyncResponse<G = Embedding, C = Embedding> = Result<SyncAccepted<G, C>, SyncError>;

impl<G, C> Default for SyncAccepted<G, C> {
    fn default() -> Self {
        Self {
            acked_version: 0,
            global_version: 0,
            global_reset: false,
            global_patterns: Vec::new(),
            global_removed: Vec::new(),
            trends: Vec::new(),
            catalog: None,
            next_sync_secs: 0,
            round: None,
            fleet: None,
        }
    }
}

// The wire forms the node keeps from upload, publication or import to the
// response, never dequantized on the way (issue 8, item 3).

/// A [`PatternSummary`] as it arrived: ternary embedding.
pub type PackedPatternSummary = PatternSummary<TernaryEmbedding>;
/// A [`PatternDelta`] as it arrived.
pub type PackedPatternDelta = PatternDelta<TernaryEmbedding>;
/// A [`SyncRequest`] as it arrived (see `codec::decode_packed_request`).
pub type PackedSyncRequest = SyncRequest<TernaryEmbedding>;
/// A [`GlobalPattern`] quantized once, at publication.
pub type PackedGlobalPattern = GlobalPattern<TernaryEmbedding>;
/// A [`CatalogEntry`] quantized once, at import.
pub type PackedCatalogEntry = CatalogEntry<I8Embedding>;
/// A [`CatalogPage`] of packed entries.
pub type PackedCatalogPage = CatalogPage<I8Embedding>;
/// A [`SyncAccepted`] in wire forms (see `codec::encode_packed_response`).
pub type PackedSyncAccepted = SyncAccepted<TernaryEmbedding, I8Embedding>;
/// A [`SyncResponse`] in wire forms.
pub type PackedSyncResponse = SyncResponse<TernaryEmbedding, I8Embedding>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(DeviceId::new("tv-00001").is_ok());
        for bad in ["", ".hidden", "-x", "a/b", "a b", &"x".repeat(65)] {
            assert!(DeviceId::new(bad).is_err(), "{bad:?}");
        }
        assert!(ContentId::new("ml100k:242").is_ok());
        assert!(ContentId::new("bad id").is_err());
        assert!(Region::new("eu-west").is_ok());
        assert_eq!(
            Region::new(DEFAULT_REGION).ok(),
            Some(Region::default_region())
        );
        assert!(Region::new("EU").is_err());
    }

    #[test]
    fn buckets_round_trip_and_follow_the_clock() {
        for b in ContextBucket::all() {
            assert_eq!(ContextBucket::from_index(b.index()).unwrap(), b);
        }
        assert_eq!(ContextBucket::all().count(), 8);
        assert!(ContextBucket::from_index(8).is_err());
        // 1970-01-03 (a Saturday) 20:00 UTC.
        let c = ViewingContext::from_unix_utc(2 * 86_400 + 20 * 3600);
        assert_eq!((c.hour, c.weekday), (20, 5));
        assert_eq!(
            c.bucket(),
            ContextBucket {
                day_part: DayPart::Evening,
                day_kind: DayKind::Weekend
            }
        );
        assert!(ViewingContext::new(24, 0).is_err());
        assert!(ViewingContext::new(3, 7).is_err());
    }

    #[test]
    fn events_reject_bad_fractions() {
        let id = ContentId::new("x").unwrap();
        let ctx = ViewingContext::new(1, 1).unwrap();
        for f in [f32::NAN, f32::INFINITY, -0.1, 1.01] {
            assert!(ViewingEvent::new(id.clone(), f, 0, ctx).is_err());
        }
        assert!(ViewingEvent::new(id, 0.7, 0, ctx).unwrap().is_success());
    }

    #[test]
    fn catalog_items_are_validated() {
        let mut item = CatalogItem {
            id: ContentId::new("m:1").unwrap(),
            title: "Toy Story".into(),
            genres: vec!["Animation".into()],
            year: Some(1995),
            description: String::new(),
        };
        assert!(item.validate().is_ok());
        assert_eq!(item.embedding_text(), "Toy Story. Animation");
        item.title = "bad\u{0}".into();
        assert!(item.validate().is_err());
        item.title = "ok".into();
        item.year = Some(3000);
        assert!(item.validate().is_err());
    }
}
