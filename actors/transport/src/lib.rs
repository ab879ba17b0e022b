//! omega-transport: how the TV, the node and the simulator carry
//! `omega-protocol` frames.
//!
//! * [`quic`]: quinn + rustls with mutual TLS, ALPN `omega/1`, revocation
//!   checked at the handshake and reloadable, device identity from the
//!   certificate, one-stream exchanges.
//! * [`attest`]: device certificates as secure-aggregation credentials
//!   (signing a TV's round keys, checking every member's).
//! * [`frame`]: reading one length-prefixed frame from an async stream, with
//!   the size limit checked before any buffer is allocated.
//!
//! Encoding and decoding the frames' contents is `omega-protocol`'s
//! ([`omega_protocol::codec`]); this crate only moves bytes.

pub mod attest;
pub mod frame;
pub mod quic;

pub use frame::read_frame;
