//! The contract the source adapter reads: `SourcesContract::from_json`
//! never panics, and a contract it accepts is written so that it reads back
//! equal, and writes the same text again.
//!
//! Input: a sources contract JSON document.

#![no_main]

use channel_core::sources::SourcesContract;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(contract) = SourcesContract::from_json(data) else {
        return;
    };
    let json = contract.to_json_pretty();
    let back = SourcesContract::from_json(json.as_bytes())
        .unwrap_or_else(|e| panic!("sources contract does not read back: {e}\n{json}"));
    assert_eq!(
        back, contract,
        "sources contract changed through JSON\n{json}"
    );
    assert_eq!(back.to_json_pretty(), json, "writing is not stable");
});
