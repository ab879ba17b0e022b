//! omega-brain-daemon: the TV daemon `omega-braind` and its CLI
//! `omega-brainctl`, over a Unix socket speaking newline-delimited JSON.
//!
//! * [`access`]: roles from the peer's credentials, the observe rate limit.
//! * [`config`]: the TOML configuration (every field defaulted, documented).
//! * [`protocol`]: request parsing, the op and error-code tables.
//! * [`server`]: the socket, its bounds, dispatch to the actors, clean shutdown.
//! * [`client`]: one request / one response, for the CLI and tests.
//!
//! The actors themselves live in `omega_brain::actors`; the binaries in
//! `src/bin` only parse flags, set up logging and wire these together.

pub mod access;
pub mod client;
pub mod config;
pub mod protocol;
pub mod server;
