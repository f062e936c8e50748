//! The manifest loader and compiler: `manifests::load_str` and
//! `compile::compile` never panic on any YAML, and every contract they
//! produce survives the JSON the provisioner writes and the dispatcher and
//! source adapter read.
//!
//! Input: a (multi-document) YAML file as a user writes it.

#![no_main]

use channel_core::sources::SourcesContract;
use channel_core::Contract;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifests) = channel_core::manifests::load_str("fuzz.yaml", text) else {
        return;
    };
    let compiled = channel_core::compile::compile(&manifests);
    for (backend, contract) in &compiled.contracts {
        let json = contract.to_json_pretty();
        let back = Contract::from_json(json.as_bytes())
            .unwrap_or_else(|e| panic!("{backend} contract does not read back: {e}\n{json}"));
        assert_eq!(
            &back, contract,
            "{backend} contract changed through JSON\n{json}"
        );
    }
    let sources = SourcesContract {
        generation: 0,
        sources: compiled.sources,
    };
    let json = sources.to_json_pretty();
    let back = SourcesContract::from_json(json.as_bytes())
        .unwrap_or_else(|e| panic!("sources contract does not read back: {e}\n{json}"));
    assert_eq!(
        back, sources,
        "sources contract changed through JSON\n{json}"
    );
});
