//! The data-plane contract a dispatcher reads: `Contract::from_json` never
//! panics, and a contract it accepts is written (`to_json_pretty`) so that
//! it reads back equal, and writes the same text again.
//!
//! Input: a contract JSON document.

#![no_main]

use channel_core::Contract;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(contract) = Contract::from_json(data) else {
        return;
    };
    let json = contract.to_json_pretty();
    let back = Contract::from_json(json.as_bytes())
        .unwrap_or_else(|e| panic!("contract does not read back: {e}\n{json}"));
    assert_eq!(back, contract, "contract changed through JSON\n{json}");
    assert_eq!(back.to_json_pretty(), json, "writing is not stable");
});
