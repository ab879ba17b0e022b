//! A frame's buffer grows with the bytes actually received: a peer that
//! announces a large frame and sends a few bytes makes the reader allocate
//! about what it sent, not the announced length. Measured with a counting
//! global allocator (this file is its own test binary, one test).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use omega_protocol::limits::MAX_REQUEST_FRAME;
use omega_transport::read_frame;
use tokio::io::AsyncWriteExt;

/// The largest single allocation (or reallocation) since the last reset.
static LARGEST: AtomicUsize = AtomicUsize::new(0);

struct Counting;

#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[tokio::test(start_paused = true)]
async fn a_large_announced_frame_allocates_only_what_arrived() {
    let announced = MAX_REQUEST_FRAME;
    let sent = 1_000;
    let (mut peer, mut stream) = tokio::io::duplex(64 * 1024);
    peer.write_all(&u32::try_from(announced).unwrap().to_be_bytes())
        .await
        .unwrap();
    peer.write_all(&vec![7u8; sent]).await.unwrap();
    LARGEST.store(0, Ordering::Relaxed);
    // The peer stalls (keeps the stream open): the read waits for the rest.
    // The paused clock runs the timeout out once nothing else can progress.
    let read = tokio::time::timeout(
        Duration::from_secs(10),
        read_frame(&mut stream, MAX_REQUEST_FRAME),
    )
    .await;
    assert!(read.is_err(), "the frame is incomplete: the read must wait");
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest < 16 * 1024,
        "largest allocation {largest} B for {sent} B received (announced {announced} B)"
    );
    drop(peer);
}
