//! The wire mirror of the domain types: what postcard actually writes.
//!
//! Compact where it pays (ternary embeddings, one byte for a rate or a bucket,
//! varints everywhere), bounded everywhere: every list is a [`BoundedVec`], whose
//! decoder refuses a length above its limit before allocating. Conversion to
//! the domain types ([`TryFrom`]) validates every field; conversion from them
//! ([`From`] / `try_from_domain`) quantizes. Nothing outside this crate needs to
//! touch these types except to measure them.

use serde::de::{Error as _, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;

use crate::domain::{
    check_len, check_unit, CatalogEntry, CatalogItem, CatalogPage, ContentId, ContextBucket,
    DomainError, FleetCursor, FleetPage, FleetTitle, GlobalPattern, NodeToTv, PatternDelta,
    PatternId, PatternSummary, Region, SyncAccepted, SyncError, SyncKind, SyncRequest,
    SyncResponse, TrendSignal, TvToNode,
};
use crate::embedding::{EmbeddingError, I8Embedding, TernaryEmbedding};
use crate::limits::*;

/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 2;
/// Oldest protocol version this build accepts (version 2 added the
/// aggregation rounds and the fleet pages; postcard is not self-describing,
/// so a version 1 body cannot be read as a version 2 one).
pub const MIN_PROTOCOL_VERSION: u16 = 2;

/// A `Vec` whose decoder rejects more than `N` elements before allocating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedVec<T, const N: usize>(pub Vec<T>);

impl<T, const N: usize> Default for BoundedVec<T, N> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T: Serialize, const N: usize> Serialize for BoundedVec<T, N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>, const N: usize> Deserialize<'de> for BoundedVec<T, N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T, const N: usize>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>, const N: usize> Visitor<'de> for V<T, N> {
            type Value = BoundedVec<T, N>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a list of at most {N} elements")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let hint = seq.size_hint().unwrap_or(0);
                if hint > N {
                    return Err(A::Error::custom(format!(
                        "list of {hint} elements, at most {N} allowed"
                    )));
                }
                let mut out = Vec::with_capacity(hint);
                while let Some(x) = seq.next_element()? {
                    if out.len() == N {
                        return Err(A::Error::custom(format!("more than {N} elements")));
                    }
                    out.push(x);
                }
                Ok(BoundedVec(out))
            }
        }
        d.deserialize_seq(V::<T, N>(PhantomData))
    }
}

impl<T, const N: usize> BoundedVec<T, N> {
    /// Converts each element, refusing more than `N` of them.
    fn try_collect<U>(
        field: &'static str,
        items: impl ExactSizeIterator<Item = U>,
        f: impl FnMut(U) -> T,
    ) -> Result<Self, DomainError> {
        check_len(field, items.len(), N)?;
        Ok(Self(items.map(f).collect()))
    }
}

/// A rate in 0.0–1.0 as one byte (resolution 1/255).
fn rate_to_byte(v: f32) -> u8 {
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

fn byte_to_rate(b: u8) -> f32 {
    f32::from(b) / 255.0
}

/// An embedding form that travels as a [`TernaryEmbedding`] (patterns and
/// globals): [`Embedding`](crate::Embedding) quantizes and dequantizes at the
/// codec, [`TernaryEmbedding`] is copied as it is.
pub trait TernaryForm: Sized {
    /// The wire form.
    fn to_ternary_form(&self) -> TernaryEmbedding;
    /// From the wire form.
    fn from_ternary_form(t: &TernaryEmbedding) -> Result<Self, EmbeddingError>;
}

impl TernaryForm for crate::Embedding {
    fn to_ternary_form(&self) -> TernaryEmbedding {
        self.to_ternary()
    }
    fn from_ternary_form(t: &TernaryEmbedding) -> Result<Self, EmbeddingError> {
        t.decode()
    }
}

impl TernaryForm for TernaryEmbedding {
    fn to_ternary_form(&self) -> TernaryEmbedding {
        self.clone()
    }
    fn from_ternary_form(t: &TernaryEmbedding) -> Result<Self, EmbeddingError> {
        // Its bytes were range-checked when it was decoded; the all-zero code
        // is refused here as the f32 form's decode refuses it, so a stored
        // pattern always has a direction (federation decodes it later).
        if t.has_direction() {
            Ok(t.clone())
        } else {
            Err(EmbeddingError::ZeroNorm)
        }
    }
}

/// An embedding form that travels as an [`I8Embedding`] (catalog entries):
/// [`Embedding`](crate::Embedding) quantizes and dequantizes at the codec,
/// [`I8Embedding`] is copied as it is (after checking its scale).
pub trait I8Form: Sized {
    /// The wire form.
    fn to_i8_form(&self) -> I8Embedding;
    /// From the wire form.
    fn from_i8_form(e: &I8Embedding) -> Result<Self, EmbeddingError>;
}

impl I8Form for crate::Embedding {
    fn to_i8_form(&self) -> I8Embedding {
        self.to_i8()
    }
    fn from_i8_form(e: &I8Embedding) -> Result<Self, EmbeddingError> {
        e.decode()
    }
}

impl I8Form for I8Embedding {
    fn to_i8_form(&self) -> I8Embedding {
        self.clone()
    }
    fn from_i8_form(e: &I8Embedding) -> Result<Self, EmbeddingError> {
        e.decode()?;
        Ok(e.clone())
    }
}

fn decode_embedding<E: TernaryForm>(
    field: &'static str,
    e: &TernaryEmbedding,
) -> Result<E, DomainError> {
    E::from_ternary_form(e).map_err(|source| DomainError::Embedding { field, source })
}

/// One pattern as it travels in a delta (about 82 bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WirePattern {
    /// Pattern id on the device.
    pub id: u64,
    /// Context bucket index, 0..8.
    pub bucket: u8,
    /// Success rate × 255.
    pub success: u8,
    /// Watches summarised.
    pub samples: u32,
    /// Ternary embedding.
    pub embedding: TernaryEmbedding,
}

impl<E: TernaryForm> From<&PatternSummary<E>> for WirePattern {
    fn from(p: &PatternSummary<E>) -> Self {
        Self {
            id: p.id.0,
            bucket: p.bucket.index(),
            success: rate_to_byte(p.success_rate),
            samples: p.samples,
            embedding: p.embedding.to_ternary_form(),
        }
    }
}

impl<E: TernaryForm> TryFrom<&WirePattern> for PatternSummary<E> {
    type Error = DomainError;
    fn try_from(w: &WirePattern) -> Result<Self, DomainError> {
        Ok(Self {
            id: PatternId(w.id),
            bucket: ContextBucket::from_index(w.bucket)?,
            embedding: decode_embedding("pattern", &w.embedding)?,
            success_rate: byte_to_rate(w.success),
            samples: w.samples,
        })
    }
}

/// Kind of sync on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WireSyncKind {
    /// [`SyncKind::Delta`].
    Delta,
    /// [`SyncKind::Snapshot`].
    Snapshot,
    /// [`SyncKind::Forget`].
    Forget,
}

/// A sync request as it travels. The version comes first so a decoder can
/// answer "unsupported version" without understanding the rest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireRequest {
    /// Protocol version.
    pub version: u16,
    /// Kind of sync.
    pub kind: WireSyncKind,
    /// See [`SyncRequest::base_version`].
    pub base_version: u64,
    /// See [`SyncRequest::pattern_version`].
    pub pattern_version: u64,
    /// See [`SyncRequest::global_version`].
    pub global_version: u64,
    /// See [`SyncRequest::catalog_version`].
    pub catalog_version: u64,
    /// Region name.
    pub region: String,
    /// Patterns added.
    pub added: BoundedVec<WirePattern, MAX_DELTA_PATTERNS>,
    /// Patterns updated.
    pub updated: BoundedVec<WirePattern, MAX_DELTA_PATTERNS>,
    /// Patterns removed.
    pub removed: BoundedVec<u64, MAX_DELTA_REMOVED>,
    /// See [`SyncRequest::round`].
    pub round: Option<TvToNode>,
    /// See [`FleetCursor::version`].
    pub fleet_version: u64,
    /// See [`FleetCursor::offset`].
    pub fleet_offset: u32,
}

impl WireRequest {
    /// Quantizes a domain request; fails only when it breaks a count limit.
    pub fn try_from_domain<E: TernaryForm>(r: &SyncRequest<E>) -> Result<Self, DomainError> {
        check_len(
            "delta.added + delta.updated",
            r.delta.added.len() + r.delta.updated.len(),
            MAX_DELTA_PATTERNS,
        )?;
        Ok(Self {
            version: PROTOCOL_VERSION,
            kind: match r.kind {
                SyncKind::Delta => WireSyncKind::Delta,
                SyncKind::Snapshot => WireSyncKind::Snapshot,
                SyncKind::Forget => WireSyncKind::Forget,
            },
            base_version: r.base_version,
            pattern_version: r.pattern_version,
            global_version: r.global_version,
            catalog_version: r.catalog_version,
            region: r.region.as_str().to_owned(),
            added: BoundedVec::try_collect("delta.added", r.delta.added.iter(), WirePattern::from)?,
            updated: BoundedVec::try_collect(
                "delta.updated",
                r.delta.updated.iter(),
                WirePattern::from,
            )?,
            removed: BoundedVec::try_collect("delta.removed", r.delta.removed.iter(), |p| p.0)?,
            round: r.round.clone(),
            fleet_version: r.fleet.version,
            fleet_offset: r.fleet.offset,
        })
    }
}

/// Converts a decoded request, moving its round message (up to a 137 KB
/// masked input) instead of copying it.
impl<E: TernaryForm> TryFrom<WireRequest> for SyncRequest<E> {
    type Error = DomainError;
    fn try_from(mut w: WireRequest) -> Result<Self, DomainError> {
        let round = w.round.take();
        let mut r = SyncRequest::try_from(&w)?;
        r.round = round;
        Ok(r)
    }
}

impl<E: TernaryForm> TryFrom<&WireRequest> for SyncRequest<E> {
    type Error = DomainError;
    fn try_from(w: &WireRequest) -> Result<Self, DomainError> {
        check_len(
            "delta.added + delta.updated",
            w.added.0.len() + w.updated.0.len(),
            MAX_DELTA_PATTERNS,
        )?;
        let patterns = |v: &[WirePattern]| {
            v.iter()
                .map(PatternSummary::try_from)
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(Self {
            kind: match w.kind {
                WireSyncKind::Delta => SyncKind::Delta,
                WireSyncKind::Snapshot => SyncKind::Snapshot,
                WireSyncKind::Forget => SyncKind::Forget,
            },
            base_version: w.base_version,
            pattern_version: w.pattern_version,
            global_version: w.global_version,
            catalog_version: w.catalog_version,
            region: Region::new(w.region.as_str())?,
            delta: PatternDelta {
                added: patterns(&w.added.0)?,
                updated: patterns(&w.updated.0)?,
                removed: w.removed.0.iter().map(|id| PatternId(*id)).collect(),
            },
            round: w.round.clone(),
            fleet: FleetCursor {
                version: w.fleet_version,
                offset: w.fleet_offset,
            },
        })
    }
}

/// A global pattern as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireGlobalPattern {
    /// Id within the region.
    pub id: u64,
    /// Context bucket index.
    pub bucket: u8,
    /// Success rate × 255.
    pub success: u8,
    /// Supporting devices.
    pub support: u32,
    /// Watches summarised.
    pub samples: u32,
    /// Ternary embedding.
    pub embedding: TernaryEmbedding,
}

/// A trend signal as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireTrend {
    /// Catalog item.
    pub content_id: String,
    /// Context bucket index.
    pub bucket: u8,
    /// Score × 255.
    pub score: u8,
}

/// A catalog entry as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireCatalogEntry {
    /// Content id.
    pub id: String,
    /// Title.
    pub title: String,
    /// Genres.
    pub genres: BoundedVec<String, MAX_GENRES>,
    /// Release year.
    pub year: Option<u16>,
    /// Description.
    pub description: String,
    /// Int8 embedding.
    pub embedding: I8Embedding,
}

/// A catalog page as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireCatalogPage {
    /// Catalog version after this page.
    pub version: u64,
    /// Items added or changed.
    pub upserts: BoundedVec<WireCatalogEntry, MAX_CATALOG_PAGE>,
    /// Items withdrawn.
    pub removed: BoundedVec<String, MAX_CATALOG_PAGE>,
    /// More pages follow.
    pub more: bool,
}

/// A successful response as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireAccepted {
    /// See [`SyncAccepted::acked_version`].
    pub acked_version: u64,
    /// See [`SyncAccepted::global_version`].
    pub global_version: u64,
    /// See [`SyncAccepted::global_reset`].
    pub global_reset: bool,
    /// Global patterns.
    pub global_patterns: BoundedVec<WireGlobalPattern, MAX_GLOBAL_PATTERNS>,
    /// Withdrawn global patterns.
    pub global_removed: BoundedVec<u64, MAX_GLOBAL_REMOVED>,
    /// Trends.
    pub trends: BoundedVec<WireTrend, MAX_TRENDS>,
    /// Catalog page.
    pub catalog: Option<WireCatalogPage>,
    /// Seconds to the next sync.
    pub next_sync_secs: u32,
    /// See [`SyncAccepted::round`] (boxed: a round step is large beside
    /// the other fields; the wire form is the same).
    pub round: Option<Box<NodeToTv>>,
    /// See [`SyncAccepted::fleet`].
    pub fleet: Option<WireFleetPage>,
}

/// One title of a fleet page as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFleetTitle {
    /// Content id.
    pub id: String,
    /// Noisy watch total (finite, > 0).
    pub total: f32,
    /// Partners and their noisy pair totals (finite, > 0).
    pub partners: BoundedVec<(String, f32), MAX_FLEET_PARTNERS>,
}

/// A fleet page as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireFleetPage {
    /// See [`FleetPage::version`].
    pub version: u64,
    /// See [`FleetPage::offset`].
    pub offset: u32,
    /// See [`FleetPage::total_titles`].
    pub total_titles: u32,
    /// The titles.
    pub titles: BoundedVec<WireFleetTitle, MAX_FLEET_PAGE>,
}

fn check_total(field: &'static str, v: f32) -> Result<f32, DomainError> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(DomainError::OutOfRange {
            field,
            value: v.to_string(),
            range: "finite, > 0",
        })
    }
}

fn fleet_to_wire(p: &FleetPage) -> Result<WireFleetPage, DomainError> {
    check_len("fleet.titles", p.titles.len(), MAX_FLEET_PAGE)?;
    let titles = p
        .titles
        .iter()
        .map(|t| {
            Ok(WireFleetTitle {
                id: t.id.as_str().to_owned(),
                total: check_total("fleet title total", t.total)?,
                partners: BoundedVec::try_collect(
                    "fleet.partners",
                    t.partners.iter(),
                    |(id, v)| (id.as_str().to_owned(), *v),
                )?,
            })
        })
        .collect::<Result<Vec<_>, DomainError>>()?;
    Ok(WireFleetPage {
        version: p.version,
        offset: p.offset,
        total_titles: p.total_titles,
        titles: BoundedVec(titles),
    })
}

fn fleet_from_wire(w: &WireFleetPage) -> Result<FleetPage, DomainError> {
    let end = u64::from(w.offset) + w.titles.0.len() as u64;
    if end > u64::from(w.total_titles) {
        return Err(DomainError::OutOfRange {
            field: "fleet.offset + titles",
            value: end.to_string(),
            range: "at most fleet.total_titles",
        });
    }
    let titles = w
        .titles
        .0
        .iter()
        .map(|t| {
            Ok(FleetTitle {
                id: ContentId::new(t.id.as_str())?,
                total: check_total("fleet title total", t.total)?,
                partners: t
                    .partners
                    .0
                    .iter()
                    .map(|(id, v)| {
                        Ok((
                            ContentId::new(id.as_str())?,
                            check_total("fleet pair total", *v)?,
                        ))
                    })
                    .collect::<Result<_, DomainError>>()?,
            })
        })
        .collect::<Result<_, DomainError>>()?;
    Ok(FleetPage {
        version: w.version,
        offset: w.offset,
        total_titles: w.total_titles,
        titles,
    })
}

/// Outcome of a sync on the wire.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WireOutcome {
    /// The sync was applied.
    Accepted(WireAccepted),
    /// The sync was refused.
    Rejected(SyncError),
}

/// A sync response as it travels; the version comes first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireResponse {
    /// Protocol version.
    pub version: u16,
    /// Outcome.
    pub outcome: WireOutcome,
}

fn truncate_reason(s: &str) -> String {
    let mut end = s.len().min(MAX_REASON_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

fn bounded_error(e: &SyncError) -> SyncError {
    match e {
        SyncError::Unauthorized { reason } => SyncError::Unauthorized {
            reason: truncate_reason(reason),
        },
        SyncError::BadRequest { reason } => SyncError::BadRequest {
            reason: truncate_reason(reason),
        },
        SyncError::Internal { reason } => SyncError::Internal {
            reason: truncate_reason(reason),
        },
        other => other.clone(),
    }
}

impl WireResponse {
    /// Quantizes a domain response; fails only when it breaks a count limit.
    /// Error reasons longer than the limit are truncated.
    pub fn try_from_domain<G: TernaryForm, C: I8Form>(
        r: &SyncResponse<G, C>,
    ) -> Result<Self, DomainError> {
        let outcome = match r {
            Err(e) => WireOutcome::Rejected(bounded_error(e)),
            Ok(a) => WireOutcome::Accepted(WireAccepted {
                acked_version: a.acked_version,
                global_version: a.global_version,
                global_reset: a.global_reset,
                global_patterns: BoundedVec::try_collect(
                    "global_patterns",
                    a.global_patterns.iter(),
                    |g| WireGlobalPattern {
                        id: g.id,
                        bucket: g.bucket.index(),
                        success: rate_to_byte(g.success_rate),
                        support: g.support,
                        samples: g.samples,
                        embedding: g.embedding.to_ternary_form(),
                    },
                )?,
                global_removed: BoundedVec::try_collect(
                    "global_removed",
                    a.global_removed.iter(),
                    |id| *id,
                )?,
                trends: BoundedVec::try_collect("trends", a.trends.iter(), |t| WireTrend {
                    content_id: t.content_id.as_str().to_owned(),
                    bucket: t.bucket.index(),
                    score: rate_to_byte(t.score),
                })?,
                catalog: a.catalog.as_ref().map(page_to_wire).transpose()?,
                next_sync_secs: a.next_sync_secs,
                round: a.round.clone().map(Box::new),
                fleet: a.fleet.as_ref().map(fleet_to_wire).transpose()?,
            }),
        };
        Ok(Self {
            version: PROTOCOL_VERSION,
            outcome,
        })
    }
}

fn page_to_wire<C: I8Form>(p: &CatalogPage<C>) -> Result<WireCatalogPage, DomainError> {
    // The decoder validates every item (genre count, text lengths); an item
    // it would refuse must not be sent, or every TV would drop the page.
    for e in &p.upserts {
        e.item.validate()?;
    }
    Ok(WireCatalogPage {
        version: p.version,
        upserts: BoundedVec::try_collect("catalog.upserts", p.upserts.iter(), |e| {
            WireCatalogEntry {
                id: e.item.id.as_str().to_owned(),
                title: e.item.title.clone(),
                genres: BoundedVec(e.item.genres.clone()),
                year: e.item.year,
                description: e.item.description.clone(),
                embedding: e.embedding.to_i8_form(),
            }
        })?,
        removed: BoundedVec::try_collect("catalog.removed", p.removed.iter(), |id| {
            id.as_str().to_owned()
        })?,
        more: p.more,
    })
}

fn page_from_wire<C: I8Form>(w: &WireCatalogPage) -> Result<CatalogPage<C>, DomainError> {
    let upserts = w
        .upserts
        .0
        .iter()
        .map(|e| {
            let item = CatalogItem {
                id: ContentId::new(e.id.as_str())?,
                title: e.title.clone(),
                genres: e.genres.0.clone(),
                year: e.year,
                description: e.description.clone(),
            };
            item.validate()?;
            let embedding =
                C::from_i8_form(&e.embedding).map_err(|source| DomainError::Embedding {
                    field: "catalog entry",
                    source,
                })?;
            Ok(CatalogEntry { item, embedding })
        })
        .collect::<Result<Vec<_>, DomainError>>()?;
    Ok(CatalogPage {
        version: w.version,
        upserts,
        removed: w
            .removed
            .0
            .iter()
            .map(|s| ContentId::new(s.as_str()))
            .collect::<Result<_, _>>()?,
        more: w.more,
    })
}

/// Converts a decoded response, moving its round message instead of
/// copying it.
impl<G: TernaryForm, C: I8Form> TryFrom<WireResponse> for SyncResponse<G, C> {
    type Error = DomainError;
    fn try_from(mut w: WireResponse) -> Result<Self, DomainError> {
        let round = match &mut w.outcome {
            WireOutcome::Accepted(a) => a.round.take(),
            WireOutcome::Rejected(_) => None,
        };
        let mut r = SyncResponse::try_from(&w)?;
        if let Ok(a) = &mut r {
            a.round = round.map(|b| *b);
        }
        Ok(r)
    }
}

impl<G: TernaryForm, C: I8Form> TryFrom<&WireResponse> for SyncResponse<G, C> {
    type Error = DomainError;
    fn try_from(w: &WireResponse) -> Result<Self, DomainError> {
        let a = match &w.outcome {
            WireOutcome::Rejected(e) => return Ok(Err(bounded_error(e))),
            WireOutcome::Accepted(a) => a,
        };
        let global_patterns = a
            .global_patterns
            .0
            .iter()
            .map(|g| {
                Ok(GlobalPattern {
                    id: g.id,
                    bucket: ContextBucket::from_index(g.bucket)?,
                    embedding: decode_embedding("global pattern", &g.embedding)?,
                    success_rate: byte_to_rate(g.success),
                    support: g.support,
                    samples: g.samples,
                })
            })
            .collect::<Result<Vec<_>, DomainError>>()?;
        let trends = a
            .trends
            .0
            .iter()
            .map(|t| {
                let score = byte_to_rate(t.score);
                check_unit("trend score", score)?;
                Ok(TrendSignal {
                    content_id: ContentId::new(t.content_id.as_str())?,
                    bucket: ContextBucket::from_index(t.bucket)?,
                    score,
                })
            })
            .collect::<Result<Vec<_>, DomainError>>()?;
        Ok(Ok(SyncAccepted {
            acked_version: a.acked_version,
            global_version: a.global_version,
            global_reset: a.global_reset,
            global_patterns,
            global_removed: a.global_removed.0.clone(),
            trends,
            catalog: a.catalog.as_ref().map(page_from_wire).transpose()?,
            next_sync_secs: a.next_sync_secs,
            round: a.round.as_deref().cloned(),
            fleet: a.fleet.as_ref().map(fleet_from_wire).transpose()?,
        }))
    }
}
