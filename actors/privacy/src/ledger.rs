//! The TV's privacy accountant: every release's ρ, kept for 24 hours.
//!
//! Rules:
//! * a release is charged before it is made, whole, at the time it is made;
//!   what the node later does with it (losing it, asking for it again) costs
//!   nothing more, because the TV re-sends the same noisy numbers;
//! * the spent budget is the zCDP sum of the charges of the last 24 hours
//!   ([`WINDOW_MS`], a rolling window: no midnight at which the budget
//!   doubles), converted to ε at the budget's δ;
//! * a charge that would take ε past the budget is refused
//!   ([`LedgerError::Exhausted`], with the time the oldest charge leaves the
//!   window), and the TV uploads nothing new until then;
//! * if the clock goes back, charges from "the future" still count
//!   (conservative); at most [`MAX_CHARGES`] charges are kept in a window.
//!
//! Plain data, no clock: the caller passes `now_ms` and persists the ledger
//! (it is `serde`).

use serde::{Deserialize, Serialize};

use crate::budget::{Budget, BudgetError};

/// The accounting window: 24 hours.
pub const WINDOW_MS: u64 = 24 * 60 * 60 * 1000;
/// Charges kept within a window; past it a charge is refused
/// ([`LedgerError::TooManyReleases`]), which bounds the ledger's size.
pub const MAX_CHARGES: usize = 512;

/// Why a charge is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LedgerError {
    /// The charge would take the last 24 hours past the budget.
    #[error(
        "privacy budget exhausted: {needed_rho:.4} rho needed, {left_rho:.4} left until {renews_at_ms} ms"
    )]
    Exhausted {
        /// ρ the refused release needs.
        needed_rho: f64,
        /// ρ left now.
        left_rho: f64,
        /// When the oldest charge leaves the window (ms since the epoch).
        renews_at_ms: u64,
    },
    /// [`MAX_CHARGES`] releases in one window already.
    #[error("{MAX_CHARGES} releases within 24 hours already")]
    TooManyReleases,
    /// The budget or ρ is invalid, or a conversion failed.
    #[error(transparent)]
    Budget(#[from] BudgetError),
}

/// One release's cost.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Charge {
    /// When it was made (ms since the epoch, the TV's clock).
    pub at_ms: u64,
    /// Its zCDP cost.
    pub rho: f64,
}

/// What the budget looks like now, for `stats`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// The daily budget's ε.
    pub epsilon_budget: f64,
    /// δ.
    pub delta: f64,
    /// ε spent over the last 24 hours.
    pub epsilon_spent: f64,
    /// ε left (budget minus spent, never below 0).
    pub epsilon_left: f64,
    /// Releases in the window.
    pub releases: usize,
    /// When the oldest charge in the window leaves it (ms), if any.
    pub renews_at_ms: Option<u64>,
}

/// The charges of the last 24 hours.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ledger {
    charges: Vec<Charge>,
}

impl Ledger {
    /// The charges kept (oldest first).
    pub fn charges(&self) -> &[Charge] {
        &self.charges
    }

    fn in_window(now_ms: u64) -> impl Fn(&&Charge) -> bool {
        move |c: &&Charge| c.at_ms.saturating_add(WINDOW_MS) > now_ms
    }

    /// ρ spent over the 24 hours before `now_ms`.
    pub fn spent_rho(&self, now_ms: u64) -> f64 {
        self.charges
            .iter()
            .filter(Self::in_window(now_ms))
            .map(|c| c.rho)
            .sum()
    }

    fn renews_at(&self, now_ms: u64) -> Option<u64> {
        self.charges
            .iter()
            .filter(Self::in_window(now_ms))
            .map(|c| c.at_ms.saturating_add(WINDOW_MS))
            .min()
    }

    /// The budget as it stands at `now_ms`.
    pub fn status(&self, budget: &Budget, now_ms: u64) -> Result<BudgetStatus, LedgerError> {
        let spent = budget.epsilon_of(self.spent_rho(now_ms))?;
        Ok(BudgetStatus {
            epsilon_budget: budget.epsilon,
            delta: budget.delta,
            epsilon_spent: spent,
            epsilon_left: (budget.epsilon - spent).max(0.0),
            releases: self.charges.iter().filter(Self::in_window(now_ms)).count(),
            renews_at_ms: self.renews_at(now_ms),
        })
    }

    /// Whether a release costing `rho` fits now, without charging it.
    pub fn check(&self, budget: &Budget, now_ms: u64, rho: f64) -> Result<(), LedgerError> {
        if !(rho.is_finite() && rho >= 0.0) {
            return Err(BudgetError::Rho(rho).into());
        }
        let in_window = self.charges.iter().filter(Self::in_window(now_ms)).count();
        if in_window >= MAX_CHARGES {
            return Err(LedgerError::TooManyReleases);
        }
        let spent = self.spent_rho(now_ms);
        if budget.epsilon_of(spent + rho)? > budget.epsilon {
            return Err(LedgerError::Exhausted {
                needed_rho: rho,
                left_rho: (budget.rho_limit()? - spent).max(0.0),
                renews_at_ms: self.renews_at(now_ms).unwrap_or(now_ms),
            });
        }
        Ok(())
    }

    /// Charges a release of cost `rho` made at `now_ms`, or refuses it
    /// (nothing changes then). Charges that left the window are dropped.
    pub fn charge(&mut self, budget: &Budget, now_ms: u64, rho: f64) -> Result<(), LedgerError> {
        self.check(budget, now_ms, rho)?;
        self.charges
            .retain(|c| c.at_ms.saturating_add(WINDOW_MS) > now_ms);
        self.charges.push(Charge { at_ms: now_ms, rho });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 60 * 60 * 1000;

    #[test]
    fn charges_add_up_and_past_the_budget_are_refused_until_they_leave_the_window() {
        let b = Budget::default();
        let limit = b.rho_limit().expect("limit");
        let mut l = Ledger::default();
        let t0 = 1_000 * HOUR;
        l.charge(&b, t0, limit * 0.6).expect("first fits");
        let before = l.clone();
        let err = l
            .charge(&b, t0 + HOUR, limit * 0.6)
            .expect_err("second does not");
        match err {
            LedgerError::Exhausted { renews_at_ms, .. } => assert_eq!(renews_at_ms, t0 + WINDOW_MS),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(l, before, "a refused charge changes nothing");
        l.charge(&b, t0 + HOUR, limit * 0.39)
            .expect("what is left fits");
        // A day after the first charge it has left the window.
        l.charge(&b, t0 + WINDOW_MS, limit * 0.6).expect("renewed");
        assert_eq!(l.charges().len(), 2, "the expired charge is dropped");
    }

    #[test]
    fn status_reports_spent_and_left() {
        let b = Budget::default();
        let mut l = Ledger::default();
        let s = l.status(&b, 0).expect("status");
        assert_eq!((s.epsilon_spent, s.epsilon_left, s.releases), (0.0, 4.0, 0));
        assert_eq!(s.renews_at_ms, None);
        let rho = b.rho_limit().expect("limit") / 2.0;
        l.charge(&b, 10, rho).expect("fits");
        let s = l.status(&b, 20).expect("status");
        assert!(s.epsilon_spent > 0.0 && s.epsilon_spent < 4.0);
        assert!((s.epsilon_spent + s.epsilon_left - 4.0).abs() < 1e-9);
        assert_eq!(s.renews_at_ms, Some(10 + WINDOW_MS));
    }

    #[test]
    fn a_clock_set_back_still_counts_later_charges() {
        let b = Budget::default();
        let limit = b.rho_limit().expect("limit");
        let mut l = Ledger::default();
        l.charge(&b, 100 * HOUR, limit * 0.9).expect("fits");
        assert!(l.charge(&b, 10 * HOUR, limit * 0.2).is_err());
    }

    #[test]
    fn the_ledger_is_bounded() {
        let b = Budget::default();
        let mut l = Ledger::default();
        for i in 0..MAX_CHARGES as u64 {
            l.charge(&b, i, 1e-9).expect("tiny charges fit");
        }
        assert_eq!(l.charge(&b, 1_000, 1e-9), Err(LedgerError::TooManyReleases));
        assert!(l.charge(&b, 1_000, f64::NAN).is_err());
    }
}
