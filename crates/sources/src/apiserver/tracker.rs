//! Turning one watch's events into changes, exactly once across relists.
//!
//! The first list of a watch is the baseline: objects that exist when the
//! source starts are not announced (as Knative's adapter, which starts from
//! a list it does not forward). Afterwards every add, update and delete is
//! one change. When the watch expires (410 Gone) and the watcher lists
//! again, the new list is compared with what was known: objects that
//! appeared, changed (another `resourceVersion`) or disappeared while no
//! watch was open become add, update and delete changes, and unchanged ones
//! nothing — no duplicates, and nothing missed in the gap.
//!
//! The tracker keeps each object it knows (the whole object in `Resource`
//! mode, to send it when it is found deleted after a relist; only the
//! reference in `Reference` mode).

use super::events::{Change, EventMode};
use kube::runtime::watcher;
use serde_json::{json, Value};
use std::collections::HashMap;

#[derive(Debug, Clone)]
struct Known {
    resource_version: String,
    object: Value,
}

/// The changes of one watch.
#[derive(Debug)]
pub struct Tracker {
    mode: EventMode,
    known: HashMap<String, Known>,
    /// The list being received (between `Init` and `InitDone`).
    listing: Option<HashMap<String, Known>>,
    /// Whether a list completed before (the first one is the baseline).
    listed: bool,
}

fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// The key of an object: its uid, else namespace/name.
fn key(object: &Value) -> String {
    match text(object, "/metadata/uid") {
        "" => format!(
            "{}/{}",
            text(object, "/metadata/namespace"),
            text(object, "/metadata/name")
        ),
        uid => uid.to_owned(),
    }
}

impl Tracker {
    pub fn new(mode: EventMode) -> Tracker {
        Tracker {
            mode,
            known: HashMap::new(),
            listing: None,
            listed: false,
        }
    }

    /// How many objects the tracker knows.
    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    fn remember(&self, object: &Value) -> Known {
        let kept = match self.mode {
            EventMode::Resource => object.clone(),
            EventMode::Reference => json!({
                "apiVersion": text(object, "/apiVersion"),
                "kind": text(object, "/kind"),
                "metadata": {
                    "name": text(object, "/metadata/name"),
                    "namespace": text(object, "/metadata/namespace"),
                    "uid": text(object, "/metadata/uid"),
                },
            }),
        };
        Known {
            resource_version: text(object, "/metadata/resourceVersion").to_owned(),
            object: kept,
        }
    }

    /// The changes `event` makes, in order.
    pub fn apply(&mut self, event: watcher::Event<Value>) -> Vec<(Change, Value)> {
        match event {
            watcher::Event::Init => {
                self.listing = Some(HashMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                let known = self.remember(&object);
                self.listing
                    .get_or_insert_with(HashMap::new)
                    .insert(key(&object), known);
                Vec::new()
            }
            watcher::Event::InitDone => {
                let listed = self.listing.take().unwrap_or_default();
                let mut changes = Vec::new();
                if self.listed {
                    for (k, now) in &listed {
                        match self.known.get(k) {
                            None => changes.push((Change::Add, now.object.clone())),
                            Some(before) if before.resource_version != now.resource_version => {
                                changes.push((Change::Update, now.object.clone()))
                            }
                            Some(_) => {}
                        }
                    }
                    for (k, before) in &self.known {
                        if !listed.contains_key(k) {
                            changes.push((Change::Delete, before.object.clone()));
                        }
                    }
                }
                self.known = listed;
                self.listed = true;
                changes
            }
            watcher::Event::Apply(object) => {
                let k = key(&object);
                let now = self.remember(&object);
                let change = match self.known.get(&k) {
                    Some(before) if before.resource_version == now.resource_version => None,
                    Some(_) => Some(Change::Update),
                    None => Some(Change::Add),
                };
                self.known.insert(k, now);
                change.map(|c| (c, object)).into_iter().collect()
            }
            watcher::Event::Delete(object) => {
                self.known.remove(&key(&object));
                vec![(Change::Delete, object)]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use watcher::Event as W;

    fn pod(name: &str, rv: u32) -> Value {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": "shop", "uid": format!("{name}-uid"), "resourceVersion": rv.to_string()}})
    }

    fn list(t: &mut Tracker, objects: &[Value]) -> Vec<(Change, String)> {
        let mut out = t.apply(W::Init);
        for o in objects {
            out.extend(t.apply(W::InitApply(o.clone())));
        }
        out.extend(t.apply(W::InitDone));
        names(out)
    }

    fn names(changes: Vec<(Change, Value)>) -> Vec<(Change, String)> {
        let mut out: Vec<(Change, String)> = changes
            .into_iter()
            .map(|(c, o)| (c, text(&o, "/metadata/name").to_owned()))
            .collect();
        out.sort_by(|a, b| a.1.cmp(&b.1));
        out
    }

    #[test]
    fn the_first_list_is_the_baseline_then_every_change_counts_once() {
        let mut t = Tracker::new(EventMode::Resource);
        assert!(list(&mut t, &[pod("a", 1), pod("b", 2)]).is_empty());
        assert_eq!(
            names(t.apply(W::Apply(pod("c", 3)))),
            [(Change::Add, "c".into())]
        );
        assert_eq!(
            names(t.apply(W::Apply(pod("a", 4)))),
            [(Change::Update, "a".into())]
        );
        // The same version again (a watch re-sending it): nothing.
        assert!(t.apply(W::Apply(pod("a", 4))).is_empty());
        assert_eq!(
            names(t.apply(W::Delete(pod("b", 5)))),
            [(Change::Delete, "b".into())]
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn a_relist_announces_only_what_changed_in_the_gap() {
        let mut t = Tracker::new(EventMode::Resource);
        list(&mut t, &[pod("a", 1), pod("b", 2), pod("c", 3)]);
        // While no watch was open: a changed, b deleted, d created.
        let changes = list(&mut t, &[pod("a", 7), pod("c", 3), pod("d", 8)]);
        assert_eq!(
            changes,
            [
                (Change::Update, "a".into()),
                (Change::Delete, "b".into()),
                (Change::Add, "d".into()),
            ]
        );
        // Unchanged relist: nothing.
        assert!(list(&mut t, &[pod("a", 7), pod("c", 3), pod("d", 8)]).is_empty());
    }

    #[test]
    fn a_deletion_found_by_a_relist_carries_what_the_mode_sends() {
        let mut t = Tracker::new(EventMode::Reference);
        list(&mut t, &[pod("a", 1)]);
        let changes = {
            let mut out = t.apply(W::Init);
            out.extend(t.apply(W::InitDone));
            out
        };
        assert_eq!(changes.len(), 1);
        let (change, object) = &changes[0];
        assert_eq!(*change, Change::Delete);
        assert_eq!(text(object, "/metadata/name"), "a");
        assert_eq!(text(object, "/kind"), "Pod");
    }
}
