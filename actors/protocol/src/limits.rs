//! Hard limits of protocol version 2. Decoders enforce them before allocating;
//! encoders refuse to build frames that break them.

/// Largest request frame body (a TV's sync request). Most requests are a
/// few hundred bytes; the largest is the one carrying a TV's masked input in
/// an aggregation round (4 bytes per entry of the round's layout: 137 KB for
/// 1,682 titles and 256 pair titles), sent once per round.
pub const MAX_REQUEST_FRAME: usize = 512 * 1024;
/// Largest response frame body (a sync response with one catalog page).
pub const MAX_RESPONSE_FRAME: usize = 1024 * 1024;

/// Added plus updated patterns in one delta; bigger snapshots are split.
pub const MAX_DELTA_PATTERNS: usize = 256;
/// Removed pattern ids in one delta.
pub const MAX_DELTA_REMOVED: usize = 1024;
/// Global patterns in one response.
pub const MAX_GLOBAL_PATTERNS: usize = 512;
/// Withdrawn global pattern ids in one response.
pub const MAX_GLOBAL_REMOVED: usize = 1024;
/// Trend signals in one response.
pub const MAX_TRENDS: usize = 100;
/// Titles in one fleet page.
pub const MAX_FLEET_PAGE: usize = 200;
/// Partners of one title in a fleet page.
pub const MAX_FLEET_PARTNERS: usize = 32;
/// Catalog entries (and removals) in one page.
pub const MAX_CATALOG_PAGE: usize = 500;

/// Device id length (characters).
pub const MAX_DEVICE_ID_LEN: usize = 64;
/// Content id length.
pub const MAX_CONTENT_ID_LEN: usize = 64;
/// Region name length.
pub const MAX_REGION_LEN: usize = 32;
/// Title length in bytes.
pub const MAX_TITLE_LEN: usize = 256;
/// Description length in bytes.
pub const MAX_DESCRIPTION_LEN: usize = 2048;
/// Genres per item.
pub const MAX_GENRES: usize = 16;
/// Genre name length in bytes.
pub const MAX_GENRE_LEN: usize = 32;
/// Reason text in an error response.
pub const MAX_REASON_LEN: usize = 256;
