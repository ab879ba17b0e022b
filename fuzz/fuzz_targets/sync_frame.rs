//! Feeds arbitrary bytes to the node's sync request path: the length-prefixed
//! frame reader (`omega_transport::frame::FrameDecoder`, the decoder under
//! `read_frame`, driven from a buffer without IO) and, for every body it
//! yields, `decode_packed_request` (the node's entry point) and
//! `decode_request` (the TV-side form). Any panic is a finding; so is the
//! stream reader disagreeing with the slice reader `codec::unframe`, or
//! depending on how the bytes were cut into reads.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use omega_protocol::codec::{decode_packed_request, decode_request, unframe};
use omega_protocol::limits::MAX_REQUEST_FRAME;
use omega_transport::frame::FrameDecoder;
use tokio_util::codec::Decoder;

/// The bodies the stream decoder yields from `data` arriving in reads of
/// `chunk` bytes, and whether the stream ended cleanly.
fn stream_bodies(data: &[u8], chunk: usize) -> (Vec<Vec<u8>>, bool) {
    let mut dec = FrameDecoder::new(MAX_REQUEST_FRAME);
    let mut buf = BytesMut::new();
    let mut bodies = Vec::new();
    for piece in data.chunks(chunk) {
        buf.extend_from_slice(piece);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(body)) => bodies.push(body.to_vec()),
                Ok(None) => break,
                Err(_) => return (bodies, false),
            }
        }
    }
    loop {
        match dec.decode_eof(&mut buf) {
            Ok(Some(body)) => bodies.push(body.to_vec()),
            Ok(None) => return (bodies, true),
            Err(_) => return (bodies, false),
        }
    }
}

/// The same split done on the whole slice with `unframe`.
fn slice_bodies(mut data: &[u8]) -> (Vec<Vec<u8>>, bool) {
    let mut bodies = Vec::new();
    while !data.is_empty() {
        match unframe(data, MAX_REQUEST_FRAME) {
            Ok((body, rest)) => {
                bodies.push(body.to_vec());
                data = rest;
            }
            Err(_) => return (bodies, false),
        }
    }
    (bodies, true)
}

fuzz_target!(|data: &[u8]| {
    let whole = stream_bodies(data, data.len().max(1));
    assert_eq!(whole, stream_bodies(data, 1), "bytewise reads differ");
    assert_eq!(whole, stream_bodies(data, 7), "7-byte reads differ");
    assert_eq!(whole, slice_bodies(data), "stream and slice framing differ");
    // Each body, and the input itself as a body (most inputs fail framing).
    for body in whole.0.iter().map(Vec::as_slice).chain([data]) {
        let packed = decode_packed_request(body);
        let plain = decode_request(body);
        let _ = (packed, plain);
    }
});
