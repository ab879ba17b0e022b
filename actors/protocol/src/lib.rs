//! omega-protocol.
