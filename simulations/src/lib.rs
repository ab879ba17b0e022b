//! omega-sim: the fleet simulator, load tests, benchmarks, quality evaluation
//! and the demo (DESIGN.md, "Simulator"). So far it holds the demo and the
//! MovieLens reader it uses, and `bench brain` (the TV brain's figures); `load`, `fleet`, `eval` and `bench` arrive with
//! the issues that build the node and the daemon they measure.

pub mod bench;
pub mod demo;
pub mod movielens;
