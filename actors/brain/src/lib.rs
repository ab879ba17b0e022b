//! The TV's brain: inference, memory, recommender and sync actors under one
//! supervisor. Filled in by the "TV brain" issue; this crate only reserves the
//! place in the workspace so the dependency layering is fixed from the start.
