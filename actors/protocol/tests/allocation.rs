//! Decoding never allocates much more than the frame it is given: every list
//! length is checked against its limit before a buffer is reserved. A counting
//! allocator (per thread) measures the peak during each decode.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omega_protocol::codec::{decode_request, decode_response};
use omega_protocol::limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};
use proptest::prelude::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static CURRENT: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = CURRENT.try_with(|c| {
            let now = c.get() + layout.size();
            c.set(now);
            let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
        });
        // SAFETY: forwarding the caller's layout to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let _ = CURRENT.try_with(|c| c.set(c.get().saturating_sub(layout.size())));
        // SAFETY: ptr was allocated by System with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn peak_during(f: impl FnOnce()) -> usize {
    let base = CURRENT.with(Cell::get);
    PEAK.with(|p| p.set(base));
    f();
    PEAK.with(Cell::get) - base
}

/// The largest decoded request is 256 patterns plus 1,024 removals, or a
/// round message whose lists serde pre-sizes cautiously (at most 1 MiB
/// whatever the claimed length) and fills only from bytes present; that
/// bounds the peak whatever the input claims.
const REQUEST_BOUND: usize = 128 * 1024 + 1024 * 1024;

/// A claimed list length of 2^32 - 1 where the added patterns go.
fn lying_request() -> Vec<u8> {
    // version 2, kind Delta, four versions 0, region "eu", then added.len = u32::MAX
    let mut body = vec![2, 0, 0, 0, 0, 0, 2, b'e', b'u'];
    body.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x0f]);
    body
}

#[test]
fn huge_claimed_lengths_allocate_nothing_big() {
    let body = lying_request();
    let peak = peak_during(|| assert!(decode_request(&body).is_err()));
    assert!(peak < 4096, "peak {peak} bytes for a 14-byte frame");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn random_bodies_stay_within_bound(mut body in proptest::collection::vec(any::<u8>(), 0..MAX_REQUEST_FRAME / 16)) {
        // Start from a valid prefix half the time so the decoder gets deep.
        if body.len() > 20 && body[0] % 2 == 0 {
            body[..9].copy_from_slice(&[2, 0, 0, 0, 0, 0, 2, b'e', b'u']);
        }
        let peak = peak_during(|| { let _ = decode_request(&body); });
        prop_assert!(peak <= REQUEST_BOUND + 2 * body.len(), "peak {} for {} bytes", peak, body.len());
        let peak = peak_during(|| { let _ = decode_response(&body); });
        prop_assert!(peak <= MAX_RESPONSE_FRAME + 2 * body.len(), "peak {} for {} bytes", peak, body.len());
    }
}

// The bound above assumes request frames of at most 512 KiB.
const _: () = assert!(MAX_REQUEST_FRAME <= 512 * 1024);
