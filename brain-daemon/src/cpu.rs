//! What the CPU offers and which SIMD code paths the daemon runs with: one
//! report for the startup log and the `health` answer (`cpu`), so that an ARM
//! TV shows NEON in use and not a scalar fallback by accident.

use serde::Serialize;

/// The CPU's SIMD features and the embedder's kernel dispatch. The catalog
/// index's distance kernel is in `health` as `index_isa` (known once the
/// index is open).
#[derive(Debug, Clone, Serialize)]
pub struct CpuReport {
    /// `std::env::consts::ARCH`: `x86_64`, `aarch64`, ...
    pub arch: &'static str,
    /// The SIMD features of those the daemon's code paths care about that this
    /// CPU has, detected at run time (x86-64: sse4.2, avx2, fma, avx512f,
    /// avx512bw, avx512vnni; aarch64: neon, dotprod, i8mm, fp16, sve).
    pub features: Vec<&'static str>,
    /// The instruction set the embedder's fused kernels dispatch to
    /// ([`omega_embed::kernel_isa`]).
    pub embed_kernels: &'static str,
}

impl CpuReport {
    /// Detects the features of the CPU this runs on.
    pub fn detect() -> Self {
        Self {
            arch: std::env::consts::ARCH,
            features: detected_features(),
            embed_kernels: omega_embed::kernel_isa(),
        }
    }

    /// One line for the log: `aarch64 [neon] embed kernels: neon`.
    pub fn line(&self) -> String {
        format!(
            "{} [{}] embed kernels: {}",
            self.arch,
            self.features.join(" "),
            self.embed_kernels
        )
    }
}

#[cfg(target_arch = "x86_64")]
fn detected_features() -> Vec<&'static str> {
    [
        ("sse4.2", std::arch::is_x86_feature_detected!("sse4.2")),
        ("avx2", std::arch::is_x86_feature_detected!("avx2")),
        ("fma", std::arch::is_x86_feature_detected!("fma")),
        ("avx512f", std::arch::is_x86_feature_detected!("avx512f")),
        ("avx512bw", std::arch::is_x86_feature_detected!("avx512bw")),
        (
            "avx512vnni",
            std::arch::is_x86_feature_detected!("avx512vnni"),
        ),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

#[cfg(target_arch = "aarch64")]
fn detected_features() -> Vec<&'static str> {
    [
        ("neon", std::arch::is_aarch64_feature_detected!("neon")),
        (
            "dotprod",
            std::arch::is_aarch64_feature_detected!("dotprod"),
        ),
        ("i8mm", std::arch::is_aarch64_feature_detected!("i8mm")),
        ("fp16", std::arch::is_aarch64_feature_detected!("fp16")),
        ("sve", std::arch::is_aarch64_feature_detected!("sve")),
    ]
    .into_iter()
    .filter_map(|(name, on)| on.then_some(name))
    .collect()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn detected_features() -> Vec<&'static str> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_the_arch_and_the_kernels() {
        let r = CpuReport::detect();
        assert_eq!(r.arch, std::env::consts::ARCH);
        #[cfg(target_arch = "aarch64")]
        assert!(r.features.contains(&"neon"), "{r:?}");
        let line = r.line();
        assert!(line.starts_with(r.arch), "{line}");
        assert!(line.ends_with(&format!("embed kernels: {}", r.embed_kernels)));
    }
}
