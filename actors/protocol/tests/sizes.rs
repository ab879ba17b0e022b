//! Frame sizes against the per-sync budgets of DESIGN.md, with real MiniLM
//! vectors, and the measurement behind "no zstd for sync frames".
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use omega_protocol::codec::{encode_request, encode_response};
use support::*;

#[test]
fn delta_with_20_patterns_fits_in_2_kib() {
    let frame = encode_request(&request_with_patterns(20)).unwrap();
    println!(
        "delta, 20 patterns: {} bytes (frame incl. 4-byte prefix)",
        frame.len()
    );
    assert!(frame.len() <= 2048, "{} bytes", frame.len());
}

#[test]
fn response_with_50_global_patterns_and_50_trends_fits_in_6_kib() {
    let frame = encode_response(&response_with(50, 50)).unwrap();
    println!("response, 50 globals + 50 trends: {} bytes", frame.len());
    assert!(frame.len() <= 6144, "{} bytes", frame.len());
}

#[test]
fn empty_sync_is_tiny() {
    let req = encode_request(&request_with_patterns(0)).unwrap();
    let resp = encode_response(&response_with(0, 0)).unwrap();
    println!(
        "empty delta {} bytes, empty response {} bytes",
        req.len(),
        resp.len()
    );
    assert!(req.len() < 40 && resp.len() < 40);
}

#[test]
fn zstd_does_not_pay_for_sync_frames() {
    // The measurement behind the codec's choice: quantized embeddings are
    // close to random, so compression saves too little to be worth a C library
    // and a CPU cost on every sync.
    for (name, frame) in [
        (
            "delta-20",
            encode_request(&request_with_patterns(20)).unwrap(),
        ),
        (
            "response-50/50",
            encode_response(&response_with(50, 50)).unwrap(),
        ),
    ] {
        let z = zstd::bulk::compress(&frame, 3).unwrap();
        let saved = 1.0 - z.len() as f64 / frame.len() as f64;
        println!(
            "{name}: {} -> {} bytes with zstd-3 ({:.1} % saved)",
            frame.len(),
            z.len(),
            saved * 100.0
        );
        assert!(
            saved < 0.15,
            "{name}: zstd saves {:.1} %: reconsider",
            saved * 100.0
        );
    }
}
