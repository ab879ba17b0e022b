//! omega-sim: the fleet simulator, load tests, benchmarks, quality evaluation
//! and the demo (DESIGN.md, "Simulator"). So far it holds the demo, the
//! MovieLens reader, `bench brain` (the TV brain's figures), `bench sync`
//! (sync frame sizes), `eval` (recommendation quality per EVALUATION.md),
//! `load` (devices over real QUIC against a node) and `fleet` (many TVs
//! through the node's code in virtual time).

pub mod bench;
pub mod bench_sync;
pub mod demo;
pub mod eval;
pub mod fleet;
pub mod load;
pub mod movielens;
