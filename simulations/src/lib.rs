//! omega-sim.
