//! omega-node: a constellation node (DESIGN.md, "Constellation").
//!
//! The binary (`main.rs`) parses the command line and signals; everything
//! else lives here so tests can run a node in-process:
//!
//! * [`config`]: the TOML configuration, every field defaulted.
//! * [`server`]: wiring and lifecycle ([`server::RunningNode`]).
//! * [`listener`]: the QUIC listener (mTLS, one sync per stream, typed
//!   answers to bad frames, connection and in-flight bounds).
//! * [`admin`]: the admin HTTP API (health, readiness, metrics, stats,
//!   content import, federation trigger, global patterns).
//! * [`telemetry`]: the Prometheus recorder and metric names.
//! * [`migrate`]: copying the embedded store into an empty ScyllaDB store
//!   (`omega-node migrate`).
//! * [`revocation`]: the device CRL, required, reloaded, failing closed.
//! * [`secrets`]: private-file checks and the admin bearer tokens.
//! * [`identity`]: the node's own certificate and key, reloaded without a
//!   restart.
//!
//! The logic (sync, federation, catalog, store) is in `omega-constellation`;
//! its actor tree is `omega_constellation::actors`.

pub mod admin;
pub mod config;
pub mod identity;
pub mod listener;
pub mod migrate;
pub mod revocation;
pub mod secrets;
pub mod server;
pub mod telemetry;

pub use config::Config;
pub use server::{RunningNode, ServeError, ServeOptions};
