//! The CloudEvents HTTP binding, both content modes: `decode_http` never
//! panics, what it accepts is a valid event, and that event survives
//! re-encoding in binary and in structured mode.
//!
//! Input: an HTTP request without its request line (`Name: value` lines,
//! an empty line, the body); see `channels_fuzz::http_request`.

#![no_main]

use channel_core::event::decode_http;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (headers, body) = channels_fuzz::http_request(data);
    let Ok(event) = decode_http(&headers, body) else {
        return;
    };
    assert_eq!(
        event.validate(),
        Ok(()),
        "decode_http returned an invalid event"
    );
    channels_fuzz::check_binary_round_trip(&event);
    channels_fuzz::check_structured_round_trip(&event);
});
