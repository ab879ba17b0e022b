//! The discrete Gaussian mechanism over integer vectors, built by OpenDP:
//! exact sampling (no floating-point noise) and its zCDP cost from OpenDP's
//! privacy map.
//!
//! The randomness is OpenDP's (without its OpenSSL feature: rand's
//! `thread_rng`, ChaCha seeded from the operating system), not an rng the
//! caller passes: noise that protects people must not be reproducible from a
//! seed in a configuration or a test.

use std::fmt;

use opendp::core::Measurement;
use opendp::domains::{AtomDomain, VectorDomain};
use opendp::measurements::make_gaussian;
use opendp::measures::ZeroConcentratedDivergence;
use opendp::metrics::L2Distance;

/// Largest noise scale accepted (beyond it nothing useful is left).
pub const MAX_SIGMA: f64 = 1e6;

/// Why a mechanism cannot be built or run.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MechanismError {
    /// σ must be finite, positive and at most [`MAX_SIGMA`].
    #[error("noise scale {0} is outside (0, {MAX_SIGMA}]")]
    Sigma(f64),
    /// The target ρ must be finite and positive.
    #[error("target rho {0} is not a finite positive number")]
    Rho(f64),
    /// The sensitivity must be at least 1.
    #[error("L2 sensitivity must be at least 1")]
    Sensitivity,
    /// OpenDP refused to build or run the measurement.
    #[error("OpenDP: {0}")]
    OpenDp(String),
}

type Meas = Measurement<
    VectorDomain<AtomDomain<i64>>,
    L2Distance<i64>,
    ZeroConcentratedDivergence,
    Vec<i64>,
>;

/// Discrete Gaussian noise of scale σ on every entry of an integer vector
/// whose L2 sensitivity (over one viewing event) is at most `sensitivity`.
#[derive(Clone)]
pub struct GaussianRelease {
    sigma: f64,
    sensitivity: u32,
    rho: f64,
    meas: Meas,
}

impl fmt::Debug for GaussianRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GaussianRelease")
            .field("sigma", &self.sigma)
            .field("sensitivity", &self.sensitivity)
            .field("rho", &self.rho)
            .finish()
    }
}

fn opendp_err(e: impl fmt::Display) -> MechanismError {
    MechanismError::OpenDp(e.to_string())
}

impl GaussianRelease {
    /// The mechanism with noise scale `sigma` for vectors of the given L2
    /// sensitivity; its ρ comes from OpenDP's privacy map.
    pub fn new(sigma: f64, sensitivity: u32) -> Result<Self, MechanismError> {
        if !(sigma.is_finite() && sigma > 0.0 && sigma <= MAX_SIGMA) {
            return Err(MechanismError::Sigma(sigma));
        }
        if sensitivity == 0 {
            return Err(MechanismError::Sensitivity);
        }
        let meas = make_gaussian::<_, _, ZeroConcentratedDivergence>(
            VectorDomain::new(AtomDomain::<i64>::default()),
            L2Distance::<i64>::default(),
            sigma,
            None,
        )
        .map_err(opendp_err)?;
        let rho = meas.map(&i64::from(sensitivity)).map_err(opendp_err)?;
        Ok(GaussianRelease {
            sigma,
            sensitivity,
            rho,
            meas,
        })
    }

    /// The least noise whose cost is at most `rho` (σ = Δ/√(2ρ), nudged up
    /// until OpenDP's map agrees).
    pub fn for_rho(rho: f64, sensitivity: u32) -> Result<Self, MechanismError> {
        if !(rho.is_finite() && rho > 0.0) {
            return Err(MechanismError::Rho(rho));
        }
        let mut sigma = f64::from(sensitivity) / (2.0 * rho).sqrt();
        for _ in 0..64 {
            let m = Self::new(sigma, sensitivity)?;
            if m.rho <= rho {
                return Ok(m);
            }
            sigma *= 1.0 + 1e-9;
        }
        Err(MechanismError::Rho(rho))
    }

    /// The noise scale σ.
    pub fn sigma(&self) -> f64 {
        self.sigma
    }

    /// The L2 sensitivity the cost is computed for.
    pub fn sensitivity(&self) -> u32 {
        self.sensitivity
    }

    /// The zCDP cost of one release.
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// `values` with independent discrete Gaussian noise on every entry.
    pub fn release(&self, values: &[i64]) -> Result<Vec<i64>, MechanismError> {
        self.meas.invoke(&values.to_vec()).map_err(opendp_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_follows_the_discrete_gaussian_formula() {
        let m = GaussianRelease::new(5.0, 4).expect("builds");
        assert!((m.rho() - 16.0 / 50.0).abs() < 1e-9, "{}", m.rho());
        let m = GaussianRelease::for_rho(0.3, 4).expect("builds");
        assert!(m.rho() <= 0.3 && m.rho() > 0.2999, "{}", m.rho());
        assert!((m.sigma() - 4.0 / 0.6f64.sqrt()).abs() < 1e-6);
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert_eq!(
            GaussianRelease::new(0.0, 4).err(),
            Some(MechanismError::Sigma(0.0))
        );
        assert!(matches!(
            GaussianRelease::new(f64::INFINITY, 4),
            Err(MechanismError::Sigma(_))
        ));
        assert_eq!(
            GaussianRelease::new(1.0, 0).err(),
            Some(MechanismError::Sensitivity)
        );
        assert!(matches!(
            GaussianRelease::for_rho(-1.0, 4),
            Err(MechanismError::Rho(_))
        ));
    }

    #[test]
    fn noise_is_centred_with_the_right_spread() {
        // 20,000 draws: the sample variance of N(0, 25) is within 5 % of 25
        // with overwhelming probability (its standard error is about 1 %).
        let m = GaussianRelease::new(5.0, 1).expect("builds");
        let out = m.release(&vec![3; 20_000]).expect("samples");
        let n = out.len() as f64;
        let mean = out.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = out.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!((mean - 3.0).abs() < 0.2, "mean {mean}");
        assert!((var - 25.0).abs() < 1.25, "variance {var}");
        assert!(out.iter().any(|&x| x != 3), "noise was added");
    }
}
