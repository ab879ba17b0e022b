//! Reading frames from a stream: whole, cut short and oversized.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use omega_protocol::codec::*;
use omega_protocol::limits::*;
use omega_protocol::*;
use omega_transport::read_frame;

#[tokio::test]
async fn read_frame_handles_cut_and_oversized_streams() {
    let frame = encode_request(&SyncRequest {
        kind: SyncKind::Delta,
        base_version: 0,
        pattern_version: 0,
        global_version: 0,
        catalog_version: 0,
        region: Region::new("eu").unwrap(),
        delta: PatternDelta::default(),
    })
    .unwrap();
    let mut whole = &frame[..];
    assert!(read_frame(&mut whole, MAX_REQUEST_FRAME).await.is_ok());
    let mut cut = &frame[..frame.len() - 2];
    assert!(matches!(
        read_frame(&mut cut, MAX_REQUEST_FRAME).await,
        Err(CodecError::Truncated { .. })
    ));
    let huge = u32::MAX.to_be_bytes();
    let mut huge = &huge[..];
    assert!(matches!(
        read_frame(&mut huge, MAX_REQUEST_FRAME).await,
        Err(CodecError::FrameTooLarge { .. })
    ));
}
