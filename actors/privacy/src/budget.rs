//! The daily privacy budget (ε, δ) and its conversion to and from
//! zero-concentrated DP (ρ), through OpenDP's conversion (CKS20, tighter than
//! the textbook ε = ρ + 2√(ρ ln 1/δ)).

use opendp::combinators::ConcentratedMeasure;
use opendp::measures::ZeroConcentratedDivergence;
use serde::{Deserialize, Serialize};

/// Largest ε accepted in a configuration: beyond it the word "private"
/// would mislead.
pub const MAX_EPSILON: f64 = 10.0;
/// Largest δ accepted in a configuration.
pub const MAX_DELTA: f64 = 1e-5;

/// Why a budget or a conversion is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BudgetError {
    /// ε must be finite, positive and at most [`MAX_EPSILON`].
    #[error("epsilon {0} is outside (0, {MAX_EPSILON}]")]
    Epsilon(f64),
    /// δ must be finite, positive and at most [`MAX_DELTA`].
    #[error("delta {0} is outside (0, {MAX_DELTA}]")]
    Delta(f64),
    /// ρ must be finite and not negative.
    #[error("rho {0} is not a finite non-negative number")]
    Rho(f64),
    /// OpenDP refused the conversion.
    #[error("privacy conversion failed: {0}")]
    Conversion(String),
}

/// A daily budget: at most `epsilon` per viewing event over any 24 hours,
/// with failure probability `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Budget {
    /// ε per viewing event per 24 hours.
    pub epsilon: f64,
    /// δ alongside.
    pub delta: f64,
}

impl Default for Budget {
    /// ε = 4, δ = 10⁻⁶: the blueprint's defaults.
    fn default() -> Self {
        Budget {
            epsilon: 4.0,
            delta: 1e-6,
        }
    }
}

impl Budget {
    /// A checked budget.
    pub fn new(epsilon: f64, delta: f64) -> Result<Self, BudgetError> {
        if !(epsilon.is_finite() && epsilon > 0.0 && epsilon <= MAX_EPSILON) {
            return Err(BudgetError::Epsilon(epsilon));
        }
        if !(delta.is_finite() && delta > 0.0 && delta <= MAX_DELTA) {
            return Err(BudgetError::Delta(delta));
        }
        Ok(Budget { epsilon, delta })
    }

    /// The ε that `rho` of zCDP amounts to at this budget's δ.
    pub fn epsilon_of(&self, rho: f64) -> Result<f64, BudgetError> {
        epsilon_of(rho, self.delta)
    }

    /// The largest ρ whose ε at this δ is within the budget (found by
    /// bisection on OpenDP's conversion, which is increasing in ρ; the
    /// answer errs low).
    pub fn rho_limit(&self) -> Result<f64, BudgetError> {
        let key = (self.epsilon.to_bits(), self.delta.to_bits());
        // The bisection runs OpenDP's conversion 60 times (arbitrary
        // precision): about 0.1 s. Budgets are few; their limits are kept.
        if let Some(&(_, rho)) = limits().iter().find(|(k, _)| *k == key) {
            return Ok(rho);
        }
        let rho = self.bisect_rho_limit()?;
        let mut cache = limits();
        if cache.len() >= MAX_CACHED_LIMITS {
            cache.clear();
        }
        cache.push((key, rho));
        Ok(rho)
    }

    fn bisect_rho_limit(&self) -> Result<f64, BudgetError> {
        let (mut lo, mut hi) = (0.0f64, self.epsilon);
        // ε(ρ) ≥ ρ, so ρ = ε is always over the budget.
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            if epsilon_of(mid, self.delta)? <= self.epsilon {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }
}

/// Budgets whose [`Budget::rho_limit`] is kept (past it the cache starts
/// again).
const MAX_CACHED_LIMITS: usize = 16;

type LimitCache = Vec<((u64, u64), f64)>;

/// The kept limits, by (ε, δ) bits. A poisoned lock (a panic while held)
/// only means a cache that may be empty: it is used as it is.
fn limits() -> std::sync::MutexGuard<'static, LimitCache> {
    static LIMITS: std::sync::Mutex<LimitCache> = std::sync::Mutex::new(Vec::new());
    LIMITS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The ε of `rho`-zCDP at `delta` (0 for ρ = 0).
pub fn epsilon_of(rho: f64, delta: f64) -> Result<f64, BudgetError> {
    if !(rho.is_finite() && rho >= 0.0) {
        return Err(BudgetError::Rho(rho));
    }
    if rho == 0.0 {
        return Ok(0.0);
    }
    let profile = ZeroConcentratedDivergence::convert(rho)
        .map_err(|e| BudgetError::Conversion(e.to_string()))?;
    profile
        .epsilon(delta)
        .map_err(|e| BudgetError::Conversion(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_budgets_are_refused() {
        assert!(matches!(
            Budget::new(0.0, 1e-6),
            Err(BudgetError::Epsilon(_))
        ));
        assert!(matches!(
            Budget::new(f64::NAN, 1e-6),
            Err(BudgetError::Epsilon(_))
        ));
        assert!(matches!(
            Budget::new(11.0, 1e-6),
            Err(BudgetError::Epsilon(_))
        ));
        assert!(matches!(Budget::new(4.0, 0.0), Err(BudgetError::Delta(_))));
        assert!(matches!(Budget::new(4.0, 0.1), Err(BudgetError::Delta(_))));
        assert!(matches!(epsilon_of(-1.0, 1e-6), Err(BudgetError::Rho(_))));
        assert_eq!(Budget::new(4.0, 1e-6), Ok(Budget::default()));
    }

    #[test]
    fn conversion_is_tighter_than_the_textbook_bound_and_monotone() {
        let rho = 0.25;
        let delta: f64 = 1e-6;
        let textbook = rho + 2.0 * (rho * (1.0 / delta).ln()).sqrt();
        let eps = epsilon_of(rho, delta).expect("converts");
        assert!(eps > 0.0 && eps < textbook, "{eps} vs {textbook}");
        assert!(epsilon_of(0.5, delta).expect("converts") > eps);
        assert_eq!(epsilon_of(0.0, delta), Ok(0.0));
    }

    #[test]
    fn the_rho_limit_spends_the_budget_and_no_more() {
        let b = Budget::default();
        let rho = b.rho_limit().expect("limit");
        let eps = b.epsilon_of(rho).expect("converts");
        assert!(eps <= b.epsilon, "{eps}");
        assert!(eps > b.epsilon - 1e-6, "{eps}");
        assert!(b.epsilon_of(rho * 1.001).expect("converts") > b.epsilon);
    }
}
