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
        round: None,
        fleet: Default::default(),
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

#[tokio::test]
async fn read_frame_reports_exact_lengths_and_reads_across_chunks() {
    use tokio::io::AsyncReadExt;

    let body = b"hello frame".to_vec();
    let framed = frame(body.clone(), MAX_REQUEST_FRAME).unwrap();
    // Header and body split over several reads, bytes after the frame ignored.
    let (a, rest) = framed.split_at(2);
    let (b, c) = rest.split_at(5);
    let mut chunks = a.chain(b).chain(c).chain(&b"next"[..]);
    assert_eq!(
        read_frame(&mut chunks, MAX_REQUEST_FRAME).await.unwrap(),
        body
    );

    let mut empty: &[u8] = &[];
    assert!(matches!(
        read_frame(&mut empty, MAX_REQUEST_FRAME).await,
        Err(CodecError::Truncated {
            expected: 4,
            got: 0
        })
    ));
    let mut half_header = &framed[..3];
    assert!(matches!(
        read_frame(&mut half_header, MAX_REQUEST_FRAME).await,
        Err(CodecError::Truncated {
            expected: 4,
            got: 3
        })
    ));
    let mut header_only = &framed[..FRAME_HEADER];
    assert!(matches!(
        read_frame(&mut header_only, MAX_REQUEST_FRAME).await,
        Err(CodecError::Truncated {
            expected: 11,
            got: 0
        })
    ));
    let mut cut = &framed[..framed.len() - 1];
    assert!(matches!(
        read_frame(&mut cut, MAX_REQUEST_FRAME).await,
        Err(CodecError::Truncated {
            expected: 11,
            got: 10
        })
    ));

    // One byte over the limit is refused with the announced length; exactly
    // the limit is read.
    let over = ((MAX_REQUEST_FRAME + 1) as u32).to_be_bytes();
    let mut over = &over[..];
    assert!(matches!(
        read_frame(&mut over, MAX_REQUEST_FRAME).await,
        Err(CodecError::FrameTooLarge { len, limit: MAX_REQUEST_FRAME }) if len == MAX_REQUEST_FRAME + 1
    ));
    let at_limit = frame(vec![7u8; MAX_REQUEST_FRAME], MAX_REQUEST_FRAME).unwrap();
    let mut at_limit = &at_limit[..];
    assert_eq!(
        read_frame(&mut at_limit, MAX_REQUEST_FRAME)
            .await
            .unwrap()
            .len(),
        MAX_REQUEST_FRAME
    );
}
