//! Feeds arbitrary bytes to every decoder a node or a TV runs on input from the
//! network. Any panic, overflow or out-of-memory is a finding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omega_protocol::codec::{decode_request, decode_response, unframe};
use omega_protocol::limits::{MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME};

fuzz_target!(|data: &[u8]| {
    let _ = unframe(data, MAX_REQUEST_FRAME);
    let _ = unframe(data, MAX_RESPONSE_FRAME);
    if let Ok(req) = decode_request(data) {
        // Whatever decodes must re-encode within the limits.
        let _ = omega_protocol::codec::encode_request(&req).expect("decoded request re-encodes");
    }
    if let Ok(resp) = decode_response(data) {
        let _ = omega_protocol::codec::encode_response(&resp).expect("decoded response re-encodes");
    }
});
