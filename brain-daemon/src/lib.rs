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
//!
//! Everything but [`protocol`] needs the default `daemon` feature; without
//! it the crate is the request parser alone, with neither the model nor the
//! store (the `socket_request` fuzz target builds it so).

#[cfg(feature = "daemon")]
pub mod access;
#[cfg(feature = "daemon")]
pub mod client;
#[cfg(feature = "daemon")]
pub mod config;
#[cfg(feature = "daemon")]
pub mod cpu;
pub mod protocol;
#[cfg(feature = "daemon")]
pub mod server;
