//! A focused timing of the hot path (not a benchmark suite): N enqueues from 64
//! concurrent tasks, then claims of up to 256 until all are claimed, then completions
//! in batches of 256. Run with
//! `cargo test -p webhook-store-redis --release --test throughput -- --ignored --nocapture`.

mod support;

use std::{sync::Arc, time::Instant};

use chrono::Utc;
use webhook_core::{
    Attempt, ClaimRequest, Completion, Endpoint, EndpointId, Event, Finished, Store,
};
use webhook_store_redis::{RedisStore, deadpool_redis::redis};

/// Redis's CPU time so far (µs), from `INFO cpu` (user + system): unlike command
/// durations, not inflated when other processes take the CPU from Redis.
async fn script_usec(store: &RedisStore) -> u64 {
    let mut conn = store.pool().get().await.unwrap();
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(&mut conn)
        .await
        .unwrap();
    let secs: f64 = info
        .lines()
        .filter(|l| l.starts_with("used_cpu_user:") || l.starts_with("used_cpu_sys:"))
        .filter_map(|l| l.split(':').nth(1)?.trim().parse::<f64>().ok())
        .sum();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let usec = (secs * 1e6) as u64;
    usec
}

const N: usize = 20_000;
const CALLERS: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, run on demand"]
async fn enqueue_claim_complete_throughput() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = Arc::new(
        RedisStore::connect(&url, &cleanup.prefix("throughput"))
            .await
            .unwrap(),
    );
    store
        .put_endpoint(&Endpoint::new("bench", "http://127.0.0.1:1/hook"))
        .await
        .unwrap();
    let payload = format!(r#"{{"data":"{}"}}"#, "x".repeat(200));
    let now = Utc::now();

    let u0 = script_usec(&store).await;
    let start = Instant::now();
    let tasks: Vec<_> = (0..CALLERS)
        .map(|c| {
            let store = Arc::clone(&store);
            let payload = payload.clone();
            tokio::spawn(async move {
                let targets = [EndpointId::from("bench")];
                for i in (c..N).step_by(CALLERS) {
                    let event = Event::new(format!("evt_{i}"), payload.clone());
                    store.enqueue(&event, &targets, now).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let enqueue = start.elapsed();
    let u1 = script_usec(&store).await;

    let start = Instant::now();
    let mut claimed = Vec::with_capacity(N);
    let request = ClaimRequest::new(now, std::time::Duration::from_secs(300), 256);
    while claimed.len() < N {
        let got = store.claim(&request).await.unwrap();
        assert!(!got.is_empty(), "claimed {} of {N}", claimed.len());
        claimed.extend(got);
    }
    let claim = start.elapsed();
    let u2 = script_usec(&store).await;

    let start = Instant::now();
    for chunk in claimed.chunks(256) {
        let finished: Vec<_> = chunk
            .iter()
            .map(|c| Finished {
                lease: c.lease.clone(),
                completion: Completion::Delivered {
                    attempt: Attempt::response(
                        now,
                        std::time::Duration::from_millis(3),
                        200,
                        b"ok",
                    ),
                },
            })
            .collect();
        let done = store.complete(&finished, now).await.unwrap();
        assert_eq!(done.applied, chunk.len());
    }
    let complete = start.elapsed();
    let u3 = script_usec(&store).await;

    let rate = |d: std::time::Duration| N as f64 / d.as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let per = |a: u64, b: u64| (b - a) as f64 / N as f64;
    println!(
        "Redis CPU per delivery: enqueue {:.1} µs, claim {:.1} µs, complete {:.1} µs",
        per(u0, u1),
        per(u1, u2),
        per(u2, u3)
    );
    println!(
        "N={N}: enqueue {:.0}/s, claim {:.0}/s, complete {:.0}/s, all three {:.0} deliveries/s",
        rate(enqueue),
        rate(claim),
        rate(complete),
        rate(enqueue + claim + complete)
    );
}

/// As the dispatcher runs it: 64 enqueuers, a claim loop and a completion writer at
/// the same time; deliveries/s from the first enqueue to the last completion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "timing, run on demand"]
async fn concurrent_pipeline_throughput() {
    let url = support::redis_url();
    let cleanup = support::Cleanup::new(&url);
    let store = Arc::new(
        RedisStore::connect(&url, &cleanup.prefix("pipeline"))
            .await
            .unwrap(),
    );
    store
        .put_endpoint(&Endpoint::new("bench", "http://127.0.0.1:1/hook"))
        .await
        .unwrap();
    let payload = format!(r#"{{"data":"{}"}}"#, "x".repeat(200));
    let now = Utc::now();
    let start = Instant::now();
    let u0 = script_usec(&store).await;
    let enqueuers: Vec<_> = (0..CALLERS)
        .map(|c| {
            let store = Arc::clone(&store);
            let payload = payload.clone();
            tokio::spawn(async move {
                let targets = [EndpointId::from("bench")];
                for i in (c..N).step_by(CALLERS) {
                    let event = Event::new(format!("evt_{i}"), payload.clone());
                    store.enqueue(&event, &targets, now).await.unwrap();
                }
            })
        })
        .collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<webhook_core::Claimed>>();
    let claimer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            let request = ClaimRequest::new(now, std::time::Duration::from_secs(300), 256);
            let mut total = 0;
            while total < N {
                let got = store.claim(&request).await.unwrap();
                if got.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                    continue;
                }
                total += got.len();
                tx.send(got).unwrap();
            }
        })
    };
    let mut done = 0;
    while done < N {
        let mut batch = rx.recv().await.unwrap();
        while let Ok(more) = rx.try_recv() {
            batch.extend(more);
        }
        for chunk in batch.chunks(256) {
            let finished: Vec<_> = chunk
                .iter()
                .map(|c| Finished {
                    lease: c.lease.clone(),
                    completion: Completion::Delivered {
                        attempt: Attempt::response(
                            now,
                            std::time::Duration::from_millis(3),
                            200,
                            b"ok",
                        ),
                    },
                })
                .collect();
            done += store.complete(&finished, now).await.unwrap().applied;
        }
    }
    let elapsed = start.elapsed();
    for t in enqueuers {
        t.await.unwrap();
    }
    claimer.await.unwrap();
    let u1 = script_usec(&store).await;
    #[allow(clippy::cast_precision_loss)]
    let per = (u1 - u0) as f64 / N as f64;
    println!(
        "N={N} concurrent: {:.0} deliveries/s, Redis CPU {per:.1} µs per delivery",
        N as f64 / elapsed.as_secs_f64()
    );
}
