//! omega-sim: the fleet simulator, load tests, benchmarks, quality evaluation
//! and the demo (DESIGN.md, "Simulator"). So far it holds the demo, the
//! MovieLens reader, `bench brain` (the TV brain's figures) and `eval`
//! (recommendation quality per EVALUATION.md: `pop`, `itemknn`, `local`);
//! `load`, `fleet`, `bench sync` and `eval`'s federated method arrive with
//! the issues that build what they measure.

pub mod bench;
pub mod demo;
pub mod eval;
pub mod movielens;
