//! Hot reload under load: subscriptions added and removed while events
//! flow, with every event accounted for.

use http::StatusCode;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tests::{channel_yaml, event, Dispatcher, HttpClient, Sink};

const WAIT: Duration = Duration::from_secs(20);

fn counts(ids: &[String]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for id in ids {
        *m.entry(id.clone()).or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_added_and_removed_under_load_lose_and_duplicate_nothing() {
    let stay = Sink::accepting().await;
    let removed = Sink::accepting().await;
    let added = Sink::accepting().await;
    let phase1 = channel_yaml(
        "c",
        &[("stay", &stay.url(), ""), ("removed", &removed.url(), "")],
    );
    let phase2 = channel_yaml(
        "c",
        &[
            ("stay", &stay.url(), ""),
            ("removed", &removed.url(), ""),
            ("added", &added.url(), ""),
        ],
    );
    let phase3 = channel_yaml(
        "c",
        &[("stay", &stay.url(), ""), ("added", &added.url(), "")],
    );
    let d = Dispatcher::start(&phase1, &[]).await;

    // A producer sending continuously, recording what was accepted, in order.
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (accepted, sent, stop) = (accepted.clone(), sent.clone(), stop.clone());
        let url = d.url("/default/c");
        tokio::spawn(async move {
            let client = HttpClient::new();
            for i in 0..5_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("e{i}");
                sent.store(i, Ordering::SeqCst);
                let (status, _, _) = client.post_binary(&url, &event(&id)).await;
                if status == StatusCode::ACCEPTED {
                    accepted.lock().expect("lock").push(id);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };

    let wait_sent = |n: usize| {
        let sent = sent.clone();
        async move { tests::eventually(WAIT, || sent.load(Ordering::SeqCst) >= n).await }
    };
    assert!(wait_sent(200).await);
    d.rewrite(&phase2).await;
    let added_from = accepted.lock().expect("lock").len();
    assert!(wait_sent(sent.load(Ordering::SeqCst) + 200).await);
    d.rewrite(&phase3).await;
    let removed_until = sent.load(Ordering::SeqCst) + 1;
    assert!(wait_sent(sent.load(Ordering::SeqCst) + 200).await);
    stop.store(true, Ordering::SeqCst);
    producer.await.expect("producer");

    let accepted = accepted.lock().expect("lock").clone();
    assert!(accepted.len() >= 600, "only {} accepted", accepted.len());
    stay.wait_for(accepted.len(), WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The subscription that stayed got every event exactly once.
    let stay_counts = counts(&stay.ids());
    for id in &accepted {
        assert_eq!(stay_counts.get(id), Some(&1), "stay: {id}");
    }
    assert_eq!(stay.count(), accepted.len());

    // The added one got every event accepted after it was applied, once.
    let added_counts = counts(&added.ids());
    for id in &accepted[added_from..] {
        assert_eq!(added_counts.get(id), Some(&1), "added: {id}");
    }
    assert!(added_counts.values().all(|n| *n == 1), "added: duplicates");

    // The removed one got nothing sent after its removal, and no duplicates.
    let removed_counts = counts(&removed.ids());
    assert!(
        removed_counts.values().all(|n| *n == 1),
        "removed: duplicates"
    );
    for id in removed_counts.keys() {
        let n: usize = id[1..].parse().expect("numeric id");
        assert!(
            n < removed_until,
            "removed subscription received {id} sent after its removal"
        );
    }
    assert_eq!(d.generation().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_reload_keeps_the_previous_configuration() {
    let sink = Sink::accepting().await;
    let good = channel_yaml("c", &[("s", &sink.url(), "")]);
    let d = Dispatcher::start(&good, &[]).await;
    let bad = good.replace("uri:", "urii:");
    std::fs::write(d.dir.path().join("manifests/channels.yaml"), bad).expect("write");
    let mut error = String::new();
    for _ in 0..100 {
        error = d.status().await["lastError"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if !error.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        error.contains("channels.yaml") && error.contains("urii"),
        "lastError: {error:?}"
    );
    assert_eq!(d.generation().await, 1);
    let (status, _, _) = d
        .client()
        .post_binary(&d.url("/default/c"), &event("still"))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(sink.wait_for(1, WAIT).await[0].id(), "still");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_slow_subscription_drains_it_without_blocking_the_admin_server() {
    let slow =
        Sink::start(|_, _| tests::Answer::status(202).with_delay(Duration::from_secs(2))).await;
    let fast = Sink::accepting().await;
    let d = Dispatcher::start(
        &channel_yaml("c", &[("slow", &slow.url(), ""), ("fast", &fast.url(), "")]),
        &[],
    )
    .await;
    for i in 0..3 {
        d.client()
            .post_binary(&d.url("/default/c"), &event(&format!("e{i}")))
            .await;
    }
    slow.wait_for(3, WAIT).await;
    // Remove the slow subscription while its three deliveries are in flight.
    let tmp = d.dir.path().join("next.yaml");
    std::fs::write(&tmp, channel_yaml("c", &[("fast", &fast.url(), "")])).expect("write");
    std::fs::rename(&tmp, d.dir.path().join("manifests/channels.yaml")).expect("rename");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let (status, _) = d
        .client()
        .get(&d.admin_url("/metrics"))
        .await
        .expect("metrics");
    assert_eq!(status, StatusCode::OK);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "a scrape waited {:?} for the drain",
        started.elapsed()
    );
    // The drain lets the in-flight deliveries finish, then the generation moves on.
    assert!(tests::eventually(WAIT, || slow.count() == 3).await);
    let mut applied = false;
    for _ in 0..100 {
        if d.generation().await == 2 {
            applied = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(applied, "removal applied after the drain");
    assert!(
        !d.log().contains("abandoning"),
        "in-flight deliveries finished"
    );
}

/// The in-memory contract compiled from `yaml`, numbered `generation`.
fn contract_json(yaml: &str, generation: u64) -> String {
    let manifests = channel_core::manifests::load_str("test.yaml", yaml).expect("manifests");
    let compiled = channel_core::compile::compile(&manifests);
    let mut contract = compiled
        .contracts
        .get(&channel_core::BackendKind::InMemory)
        .cloned()
        .unwrap_or_default();
    contract.generation = generation;
    contract.backend = Some(channel_core::BackendKind::InMemory);
    contract.to_json_pretty()
}

/// Follows a contract file mounted the way kubelet mounts a ConfigMap
/// (`inmemory.json -> ..data/inmemory.json`, `..data -> ..<timestamp>/`,
/// updated by swapping the `..data` symlink), and one replaced by rename.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contract_file_is_followed_through_configmap_symlink_swaps_and_renames() {
    use std::os::unix::fs::symlink;
    let first = Sink::accepting().await;
    let second = Sink::accepting().await;
    let mount = tempfile::tempdir().expect("tempdir");
    let write_version = |name: &str, json: &str| {
        let dir = mount.path().join(name);
        std::fs::create_dir(&dir).expect("mkdir");
        std::fs::write(dir.join("inmemory.json"), json).expect("write");
    };
    write_version(
        "..2026_01_01_00_00_00.1",
        &contract_json(&channel_yaml("c", &[("s", &first.url(), "")]), 1),
    );
    symlink("..2026_01_01_00_00_00.1", mount.path().join("..data")).expect("symlink");
    symlink("..data/inmemory.json", mount.path().join("inmemory.json")).expect("symlink");

    let binary = tests::bin_dir().join("inmemory-dispatcher");
    let addr = || -> std::net::SocketAddr {
        format!("127.0.0.1:{}", tests::free_port())
            .parse()
            .expect("addr")
    };
    let d = Dispatcher::launch_on_contract(
        binary,
        Vec::new(),
        mount.path().join("inmemory.json"),
        addr(),
        addr(),
    );
    d.wait_ready().await;
    assert_eq!(d.generation().await, 1);
    let post = |id: &'static str| {
        let client = d.client();
        let url = d.url("/default/c");
        async move { client.post_binary(&url, &event(id)).await.0 }
    };
    assert_eq!(post("one").await, StatusCode::ACCEPTED);
    first.wait_for(1, WAIT).await;

    // kubelet's update: a new timestamped directory, then an atomic swap
    // of `..data` (a new symlink renamed over the old one).
    write_version(
        "..2026_01_01_00_01_00.2",
        &contract_json(&channel_yaml("c", &[("s", &second.url(), "")]), 2),
    );
    symlink("..2026_01_01_00_01_00.2", mount.path().join("..data_tmp")).expect("symlink");
    std::fs::rename(mount.path().join("..data_tmp"), mount.path().join("..data")).expect("swap");
    std::fs::remove_dir_all(mount.path().join("..2026_01_01_00_00_00.1")).expect("cleanup");
    let deadline = std::time::Instant::now() + WAIT;
    while d.generation().await < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "symlink swap not applied; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post("two").await, StatusCode::ACCEPTED);
    assert_eq!(second.wait_for(1, WAIT).await[0].id(), "two");

    // A writer replacing the file by rename (the standalone provisioner).
    let file = mount.path().join("inmemory.json");
    let tmp = mount.path().join(".inmemory.json.tmp");
    std::fs::write(
        &tmp,
        contract_json(&channel_yaml("c", &[("s", &first.url(), "")]), 3),
    )
    .expect("write");
    std::fs::rename(&tmp, &file).expect("rename");
    let deadline = std::time::Instant::now() + WAIT;
    while d.generation().await < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "rename not applied; log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(post("three").await, StatusCode::ACCEPTED);
    assert!(tests::eventually(WAIT, || first.ids().contains(&"three".to_owned())).await);
    assert!(!second.ids().contains(&"three".to_owned()));
}
