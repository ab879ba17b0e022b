//! Home of the `omega-node` binary (the "Constellation node" issue).
