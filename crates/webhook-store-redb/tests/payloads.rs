//! Payloads round-trip byte for byte, compressed or not, and large compressible ones
//! take less room on disk.

use std::{path::Path, time::Duration};

use chrono::{DateTime, Utc};
use webhook_core::{ClaimRequest, Endpoint, EndpointId, Event, Store};
use webhook_store_redb::{RedbOptions, RedbStore};

fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
}

/// 10 KiB of JSON-like text: compresses well.
fn compressible() -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0u32;
    while out.len() < 10 * 1024 {
        out.extend_from_slice(format!("{{\"order\":{i},\"status\":\"paid\"}},").as_bytes());
        i += 1;
    }
    out.truncate(10 * 1024);
    out
}

/// 10 KiB of noise: does not compress.
fn noise() -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..10 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[3]
        })
        .collect()
}

async fn round_trip(store: &RedbStore, id: &str, payload: &[u8]) {
    let to: Vec<EndpointId> = vec!["a".into()];
    store
        .enqueue(&Event::new(id, payload.to_vec()), &to, t(0))
        .await
        .unwrap();
    let record = store.get_event(None, &id.into()).await.unwrap().unwrap();
    assert_eq!(&record.event.payload[..], payload, "{id}: get_event");
}

#[tokio::test(flavor = "multi_thread")]
async fn payloads_round_trip_compressed_and_raw() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("small", b"{\"tiny\":true}".to_vec()),
        ("at-threshold", vec![b'x'; 1024]),
        ("over-threshold", vec![b'x'; 1025]),
        ("compressible-10k", compressible()),
        ("noise-10k", noise()),
        ("big-1m", compressible().repeat(100)),
    ];
    {
        let store = RedbStore::open(&path).unwrap();
        store
            .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
            .await
            .unwrap();
        for (id, payload) in &cases {
            round_trip(&store, id, payload).await;
        }
        let claimed = store
            .claim(&ClaimRequest::new(t(0), Duration::from_secs(30), 100))
            .await
            .unwrap();
        assert_eq!(claimed.len(), cases.len());
        for c in &claimed {
            let (_, payload) = cases
                .iter()
                .find(|(id, _)| *id == c.event.id.as_str())
                .unwrap();
            assert_eq!(&c.event.payload[..], &payload[..], "{}: claim", c.event.id);
        }
    }
    // And after reopening.
    let store = RedbStore::open(&path).unwrap();
    for (id, payload) in &cases {
        let record = store.get_event(None, &(*id).into()).await.unwrap().unwrap();
        assert_eq!(
            &record.event.payload[..],
            &payload[..],
            "{id}: after reopen"
        );
    }
}

async fn fill(path: &Path, options: RedbOptions) -> u64 {
    {
        let store = RedbStore::open_with(path, options).unwrap();
        store
            .put_endpoint(&Endpoint::new("a", "https://example.test/a"))
            .await
            .unwrap();
        let to: Vec<EndpointId> = vec!["a".into()];
        let payload = compressible();
        let events: Vec<Event> = (0..300)
            .map(|i| Event::new(format!("e{i}"), payload.clone()))
            .collect();
        let results =
            futures_util::future::join_all(events.iter().map(|e| store.enqueue(e, &to, t(0))))
                .await;
        assert!(results.into_iter().all(|r| r.is_ok()));
    }
    std::fs::metadata(path).unwrap().len()
}

#[tokio::test(flavor = "multi_thread")]
async fn compressed_payloads_take_less_disk() {
    let dir = tempfile::tempdir().unwrap();
    let compressed = fill(&dir.path().join("compressed.redb"), RedbOptions::default()).await;
    let raw = fill(
        &dir.path().join("raw.redb"),
        RedbOptions {
            compress_threshold: usize::MAX,
            ..RedbOptions::default()
        },
    )
    .await;
    eprintln!("300 x 10 KiB: {compressed} bytes compressed, {raw} bytes raw");
    assert!(
        compressed * 2 < raw,
        "compressed file {compressed} bytes, raw {raw} bytes"
    );
}
