//! omega-certs.
