//! `omega-privacy`: what a TV may upload about its viewer, and what it costs.
//!
//! # The guarantee, in plain words
//!
//! The node, or whoever holds its store, is not trusted with anything one TV
//! sends: it may be curious, choose when the TV syncs, ask for snapshots at
//! will and run devices of its own. Against all of that a TV promises its
//! viewer **event-level differential privacy**: whatever the TV uploads in any
//! 24 hours would have been almost as likely had any one viewing event (one
//! watch) been added or removed, up to a daily budget of ε (default 4) with
//! failure probability δ (default 10⁻⁶). Past the budget the TV uploads
//! nothing until enough of it has left the 24-hour window.
//!
//! # How
//!
//! * **What is uploaded** is a [`contribution`]: a vector of 0/1 entries
//!   over a fixed layout — which titles were watched successfully since the
//!   last release (each title once, however often it was watched) and which
//!   pairs of titles were watched within a few watches of each other. Nothing
//!   else: no ids, timestamps, counts or rates. One event changes at most
//!   `1 + 3·window` entries, so the vector's L2 sensitivity is bounded by
//!   construction ([`ContributionLayout::l2_sensitivity`]); a property test
//!   checks the bound on random histories.
//! * **Noise**: every entry gets discrete Gaussian noise ([`mechanism`]),
//!   sampled exactly by OpenDP (Canonne, Kamath & Steinke 2020) instead of a
//!   floating-point formula, whose rounding leaks (Mironov 2012). Its privacy
//!   cost is zero-concentrated DP ρ = Δ²/(2σ²), computed by OpenDP's map.
//! * **Accounting** ([`ledger`]): ρ adds up over every release in the last
//!   24 hours (zCDP composition) and is converted to ε at the budget's δ by
//!   OpenDP. A release is charged when it is made, whole and in advance,
//!   whatever the node later does with it; re-sending the same noisy release
//!   (a snapshot after the node lost it) costs nothing, since it adds no
//!   information.
//!
//! The mechanism is chosen by measured quality at this budget (see the
//! repository's ARCHITECTURE.md): item and pair indicators are what item
//! co-occurrence recommenders need, and a fixed dense layout is what secure
//! aggregation (summing masked vectors, so that the node sees only sums over
//! many TVs) requires.
//!
//! * **Secure aggregation** ([`secagg`]): TVs upload their noisy
//!   contributions masked so that the node learns only their sum over a
//!   cohort (Bonawitz et al. 2017), as sans-IO client and server state
//!   machines.

pub mod budget;
pub mod contribution;
pub mod ledger;
pub mod mechanism;
pub mod round;
pub mod secagg;

pub use budget::{Budget, BudgetError};
pub use contribution::{Contribution, ContributionLayout, LayoutError, Watch};
pub use ledger::{BudgetStatus, Ledger, LedgerError};
pub use mechanism::{GaussianRelease, MechanismError};
