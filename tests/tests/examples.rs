//! The example manifests under `deploy/examples` load and compile without
//! a problem, and the broker walk-through routes the README's events to
//! the sinks the README says.

use channel_core::compile::compile;
use channel_core::event::{Event, ExtensionValue};
use channel_core::manifests::load_paths;
use event_filter::{Filter, FilterResult};
use std::path::{Path, PathBuf};

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .join("deploy/examples")
}

#[test]
fn every_example_compiles_without_problems() {
    let mut seen = 0;
    for entry in std::fs::read_dir(examples()).expect("deploy/examples") {
        let dir = entry.expect("entry").path();
        let manifests = load_paths(std::slice::from_ref(&dir))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let compiled = compile(&manifests);
        assert!(
            compiled.problems.is_empty(),
            "{}: {:#?}",
            dir.display(),
            compiled.problems
        );
        seen += 1;
    }
    assert!(seen >= 3, "quickstart, compose and broker at least");
}

#[test]
fn the_broker_walkthrough_routes_as_the_readme_says() {
    let manifests = load_paths(&[examples().join("broker")]).expect("loads");
    let compiled = compile(&manifests);
    let channel = compiled
        .contracts
        .values()
        .flat_map(|c| &c.channels)
        .find(|c| c.broker.is_some())
        .expect("the broker's channel");
    let sinks_of = |e: &Event| -> Vec<String> {
        channel
            .subscriptions
            .iter()
            .filter(|s| {
                let t = s.trigger.as_ref().expect("a trigger");
                let f = Filter::compile(Some(&t.attributes), &t.filters).expect("filter");
                f.evaluate(e) == FilterResult::Pass
            })
            .map(|s| s.name.clone())
            .collect()
    };
    let mut created = Event::new("o-1", "/shop/us", "shop.order.created");
    created
        .extensions
        .insert("quantity".into(), ExtensionValue::String("12".into()));
    assert_eq!(sinks_of(&created), ["big", "orders"]);
    let cancelled = Event::new("o-2", "/shop/eu/fr", "shop.order.cancelled");
    assert_eq!(sinks_of(&cancelled), ["europe"]);
    // event-display's reply: new id, type from --reply-type, source event-display.
    let reply = Event::new("r-1", "event-display", "shop.order.accepted");
    assert_eq!(sinks_of(&reply), ["big"]);
}
