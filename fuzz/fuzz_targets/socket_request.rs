//! Feeds arbitrary bytes to the TV daemon's socket request parser, as one
//! request line, at a few receive times (the epoch, a present-day time and
//! the largest). The parser must answer every line with a request or a typed
//! error and never panic; whatever it answers must serialize to a response
//! line, as the server does with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use omega_brain_daemon::protocol::{err_line, parse};

/// Receive times: the parser takes `now` as the default of `at`, `hour` and
/// `weekday`, so its extremes are part of the input space.
const NOWS: [u64; 3] = [0, 1_800_000_000, u64::MAX];

fuzz_target!(|data: &[u8]| {
    // The server hands the parser a line without its newline.
    if data.contains(&b'\n') {
        return;
    }
    for now in NOWS {
        let (id, parsed) = parse(data, now);
        if let Err(e) = parsed {
            let line = err_line(&id, &e);
            // One line: the newline that ends it and no other.
            let body = line.strip_suffix('\n').expect("ends with its newline");
            assert!(!body.contains('\n'), "an error response is one line");
        }
    }
});
