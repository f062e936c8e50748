//! The CloudEvents JSON event format: `from_structured_json` never panics,
//! and whatever it reads (valid event or not) `to_structured_json` writes
//! back so that it reads the same; a valid one also survives both HTTP
//! content modes.
//!
//! Input: the JSON body of a structured-mode request.

#![no_main]

use channel_core::event::from_structured_json;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(event) = from_structured_json(data) else {
        return;
    };
    channels_fuzz::check_json_round_trip(&event);
    if event.validate().is_ok() {
        channels_fuzz::check_structured_round_trip(&event);
        channels_fuzz::check_binary_round_trip(&event);
    }
});
