//! End-to-end delivery behaviour against real local hyper receivers.

mod support;

use std::{
    sync::{Arc, atomic::Ordering::SeqCst},
    time::{Duration, Instant},
};

use support::{Receiver, Reply, eventually};
use webhook_dispatcher::{
    CircuitBreakerConfig, DeliveryState, Dispatcher, DispatcherConfig, Endpoint, Error, Event,
    IdempotencyKey, MemoryStore, Ordering, OverflowPolicy, RetryPolicy, SealingKey, SealingStore,
    SignatureScheme, Store, WebhookReceiver,
};

const WAIT: Duration = Duration::from_secs(10);

fn config() -> DispatcherConfig {
    DispatcherConfig {
        poll_interval: Duration::from_millis(20),
        request_timeout: Duration::from_secs(2),
        default_retry_policy: fast_retries(5),
        ..DispatcherConfig::default()
    }
}

fn fast_retries(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::exponential(
        Duration::from_millis(10),
        Duration::from_millis(40),
        max_attempts,
    )
}

fn key(event: &str, endpoint: &str) -> IdempotencyKey {
    IdempotencyKey::new(event.into(), endpoint.into(), None)
}

/// What another process sharing `store` does: stores `endpoint` and sends event `e1`
/// to it, without this process's dispatcher knowing.
async fn another_process_sends_e1(store: &dyn Store, endpoint: Endpoint) {
    let id = endpoint.id.clone();
    store.put_endpoint(&endpoint).await.unwrap();
    store
        .enqueue(&Event::new("e1", "{}"), &[id], chrono::Utc::now())
        .await
        .unwrap();
}

async fn final_state(
    dispatcher: &Dispatcher,
    key: &IdempotencyKey,
) -> webhook_dispatcher::DeliveryRecord {
    eventually(WAIT, || async {
        let record = dispatcher.delivery_status(key).await.unwrap()?;
        record.delivery.state.is_final().then_some(record)
    })
    .await
}

#[tokio::test]
async fn delivers_signed_request_with_stable_id_and_custom_headers() {
    let receiver = Receiver::ok().await;
    let dispatcher = Dispatcher::new(config());
    let endpoint = Endpoint::new("orders", receiver.url())
        .with_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .with_header("X-Team", "payments");
    dispatcher.register_endpoint(endpoint).await.unwrap();
    let receipt = dispatcher
        .dispatch(Event::new("evt_1", r#"{"id":1}"#), vec!["orders".into()])
        .await
        .unwrap();
    assert_eq!(receipt.created, 1);

    let got = receiver.wait_for(1, WAIT).await.remove(0);
    assert_eq!(&got.body[..], br#"{"id":1}"#, "payload sent byte for byte");
    assert_eq!(got.header("webhook-id"), Some("evt_1"));
    assert_eq!(got.header("x-team"), Some("payments"));
    assert_eq!(got.header("content-type"), Some("application/json"));
    WebhookReceiver::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .verify_signature(&got.headers, &got.body)
        .expect("signature verifies with webhook-sdk");

    let record = final_state(&dispatcher, &key("evt_1", "orders")).await;
    assert!(matches!(
        record.delivery.state,
        DeliveryState::Delivered { .. }
    ));
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.attempts[0].status, Some(200));
    eventually(WAIT, || async {
        (dispatcher.metrics().delivered == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn legacy_schemes_are_selectable_per_endpoint() {
    let receiver = Receiver::ok().await;
    let dispatcher = Dispatcher::new(config());
    let endpoint = Endpoint::new("legacy", receiver.url())
        .with_secret(b"supersecret")
        .with_signature_scheme(SignatureScheme::InlineTimestamp);
    dispatcher.register_endpoint(endpoint).await.unwrap();
    dispatcher
        .dispatch(Event::new("e", "{}"), vec!["legacy".into()])
        .await
        .unwrap();
    let got = receiver.wait_for(1, WAIT).await.remove(0);
    let signature = got.header("x-webhook-signature").expect("seed 004 header");
    assert!(
        signature.starts_with("t=") && signature.contains(",v1="),
        "{signature}"
    );
    WebhookReceiver::new(b"supersecret")
        .with_scheme(SignatureScheme::InlineTimestamp)
        .verify_signature(&got.headers, &got.body)
        .unwrap();
}

#[tokio::test]
async fn retries_a_500_then_succeeds_with_the_same_webhook_id() {
    let receiver = Receiver::start(|_, n| {
        if n == 0 {
            Reply::status(500)
        } else {
            Reply::ok()
        }
    })
    .await;
    let dispatcher = Dispatcher::new(config());
    dispatcher
        .register_endpoint(Endpoint::new("a", receiver.url()))
        .await
        .unwrap();
    dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["a".into()])
        .await
        .unwrap();
    let record = final_state(&dispatcher, &key("e1", "a")).await;
    assert!(matches!(
        record.delivery.state,
        DeliveryState::Delivered { .. }
    ));
    let statuses: Vec<_> = record.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, vec![Some(500), Some(200)]);
    let ids = support::webhook_ids(&receiver.received());
    assert_eq!(ids, vec!["e1", "e1"], "webhook-id is stable across retries");
}

#[tokio::test]
async fn a_400_is_final_and_goes_to_the_dlq_then_replays() {
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = fail.clone();
    let receiver = Receiver::start(move |_, _| {
        if flag.load(SeqCst) {
            Reply::status(400)
        } else {
            Reply::ok()
        }
    })
    .await;
    let dispatcher = Dispatcher::new(config());
    dispatcher
        .register_endpoint(Endpoint::new("a", receiver.url()))
        .await
        .unwrap();
    dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["a".into()])
        .await
        .unwrap();
    let record = final_state(&dispatcher, &key("e1", "a")).await;
    assert!(
        matches!(record.delivery.state, DeliveryState::Dead { .. }),
        "400 is not retried"
    );
    assert_eq!(record.attempts.len(), 1);
    let dead = dispatcher
        .dead_letters(&webhook_dispatcher::DeadLetterQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(dead.len(), 1);

    fail.store(false, SeqCst);
    assert!(dispatcher.replay_dlq_entry(&key("e1", "a")).await.unwrap());
    let record = final_state(&dispatcher, &key("e1", "a")).await;
    assert!(
        matches!(record.delivery.state, DeliveryState::Delivered { .. }),
        "replay delivers"
    );
    assert_eq!(record.attempts.len(), 2, "history kept across replay");
    assert_eq!(dispatcher.replay_dlq_all().await.unwrap(), 0);
}

#[tokio::test]
async fn exhausted_retries_on_connection_refused_go_to_the_dlq() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dispatcher = Dispatcher::new(config());
    let endpoint =
        Endpoint::new("gone", format!("http://127.0.0.1:{port}/hook")).with_retry(fast_retries(3));
    dispatcher.register_endpoint(endpoint).await.unwrap();
    dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["gone".into()])
        .await
        .unwrap();
    let record = final_state(&dispatcher, &key("e1", "gone")).await;
    assert!(matches!(record.delivery.state, DeliveryState::Dead { .. }));
    assert_eq!(record.attempts.len(), 3, "max_attempts attempts, then dead");
    assert!(
        record
            .attempts
            .iter()
            .all(|a| a.status.is_none() && a.error.is_some())
    );
}

#[tokio::test]
async fn gone_410_disables_the_endpoint() {
    let receiver = Receiver::start(|_, _| Reply::status(410)).await;
    let dispatcher = Dispatcher::new(config());
    dispatcher
        .register_endpoint(Endpoint::new("a", receiver.url()))
        .await
        .unwrap();
    dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["a".into()])
        .await
        .unwrap();
    let record = final_state(&dispatcher, &key("e1", "a")).await;
    assert!(matches!(record.delivery.state, DeliveryState::Dead { .. }));
    let endpoint = eventually(WAIT, || async {
        let ep = dispatcher.endpoint(&"a".into()).await.unwrap()?;
        (!ep.enabled).then_some(ep)
    })
    .await;
    assert!(endpoint.disabled_reason.unwrap().contains("410"));
    dispatcher
        .dispatch(Event::new("e2", "{}"), vec!["a".into()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(receiver.count(), 1, "a disabled endpoint receives nothing");
}

#[tokio::test]
async fn a_late_410_leaves_an_endpoint_moved_meanwhile_alone() {
    let old = Receiver::start(|_, _| Reply::status(410).after(Duration::from_millis(300))).await;
    let new = Receiver::ok().await;
    let dispatcher = Dispatcher::new(config());
    dispatcher
        .register_endpoint(Endpoint::new("a", old.url()))
        .await
        .unwrap();
    dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["a".into()])
        .await
        .unwrap();
    old.wait_for(1, WAIT).await;
    // The user moves the endpoint while the old URL is answering.
    dispatcher
        .register_endpoint(Endpoint::new("a", new.url()))
        .await
        .unwrap();
    let record = final_state(&dispatcher, &key("e1", "a")).await;
    assert!(matches!(record.delivery.state, DeliveryState::Dead { .. }));
    let stored = dispatcher.endpoint(&"a".into()).await.unwrap().unwrap();
    assert!(stored.enabled, "{stored:?}");
    assert_eq!(stored.url, new.url());
    dispatcher
        .dispatch(Event::new("e2", "{}"), vec!["a".into()])
        .await
        .unwrap();
    new.wait_for(1, WAIT).await;
}

#[tokio::test]
async fn an_endpoint_created_by_another_process_gets_a_lease_longer_than_its_timeout() {
    let receiver = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(500))).await;
    let store = Arc::new(MemoryStore::new());
    // This process caches no endpoint yet: its leases are sized for its 2 s default.
    let dispatcher = Dispatcher::new_with_storage(config(), store.clone()).await;
    // Another process creates an endpoint with a long timeout and dispatches to it.
    another_process_sends_e1(
        &*store,
        Endpoint::new("slow", receiver.url()).with_timeout(Duration::from_secs(60)),
    )
    .await;
    receiver.wait_for(1, WAIT).await;
    let record = dispatcher
        .delivery_status(&key("e1", "slow"))
        .await
        .unwrap()
        .unwrap();
    let DeliveryState::InFlight { lease_until } = record.delivery.state else {
        panic!("in flight while the receiver answers: {record:?}");
    };
    assert!(
        lease_until > chrono::Utc::now() + chrono::Duration::seconds(60),
        "the lease outlasts the 60 s timeout: {lease_until}"
    );
    let record = final_state(&dispatcher, &key("e1", "slow")).await;
    assert!(matches!(
        record.delivery.state,
        DeliveryState::Delivered { .. }
    ));
    assert_eq!(
        record.attempts.len(),
        1,
        "deferred, not attempted, with the short lease"
    );
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn a_delivery_whose_endpoint_cannot_be_loaded_goes_back_to_the_queue() {
    let receiver = Receiver::ok().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // Another process, with another sealing key, creates an endpoint with a secret and
    // dispatches to it.
    let theirs = Arc::new(SealingStore::new(
        store.clone(),
        SealingKey::from_bytes(&[1; 32]),
    ));
    another_process_sends_e1(
        &*theirs,
        Endpoint::new("sealed", receiver.url())
            .with_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
    )
    .await;
    // This process cannot open the secret: it must not send unsigned, nor hold the
    // delivery for its whole lease (14 s here), but put it back, counted as an error.
    let ours = Arc::new(SealingStore::new(
        store.clone(),
        SealingKey::from_bytes(&[2; 32]),
    ));
    let dispatcher = Dispatcher::new_with_storage(config(), ours).await;
    let record = eventually(WAIT, || async {
        let record = store.get_delivery(&key("e1", "sealed")).await.unwrap()?;
        let DeliveryState::Pending { next_attempt_at } = record.delivery.state else {
            return None;
        };
        (next_attempt_at > record.delivery.created_at).then_some(record)
    })
    .await;
    assert!(record.attempts.is_empty(), "nothing was attempted");
    assert!(dispatcher.store_errors() > 0);
    dispatcher.shutdown().await;
    assert_eq!(receiver.count(), 0);
    // With the right key it goes out.
    let fixed = Dispatcher::new_with_storage(config(), theirs).await;
    let record = final_state(&fixed, &key("e1", "sealed")).await;
    assert!(matches!(
        record.delivery.state,
        DeliveryState::Delivered { .. }
    ));
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn retry_after_on_429_is_honoured() {
    let receiver = Receiver::start(|_, n| {
        if n == 0 {
            Reply::status(429).header("retry-after", "1")
        } else {
            Reply::ok()
        }
    })
    .await;
    let dispatcher = Dispatcher::new(config());
    dispatcher
        .register_endpoint(Endpoint::new("a", receiver.url()))
        .await
        .unwrap();
    dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["a".into()])
        .await
        .unwrap();
    let got = receiver.wait_for(2, WAIT).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, Retry-After said 1s"
    );
}

#[tokio::test]
async fn a_hanging_receiver_times_out_and_is_retried() {
    let receiver = Receiver::start(|_, n| {
        if n == 0 {
            Reply::ok().after(Duration::from_secs(30))
        } else {
            Reply::ok()
        }
    })
    .await;
    let dispatcher = Dispatcher::new(config());
    let endpoint = Endpoint::new("slow", receiver.url()).with_timeout(Duration::from_millis(200));
    dispatcher.register_endpoint(endpoint).await.unwrap();
    dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["slow".into()])
        .await
        .unwrap();
    let record = final_state(&dispatcher, &key("e1", "slow")).await;
    assert!(matches!(
        record.delivery.state,
        DeliveryState::Delivered { .. }
    ));
    assert_eq!(record.attempts.len(), 2);
    assert!(
        record.attempts[0]
            .error
            .as_deref()
            .unwrap()
            .contains("timed out"),
        "{:?}",
        record.attempts[0]
    );
}

#[tokio::test]
async fn dispatching_the_same_key_twice_delivers_once() {
    let receiver = Receiver::ok().await;
    let dispatcher = Dispatcher::new(config());
    dispatcher
        .register_endpoint(Endpoint::new("a", receiver.url()))
        .await
        .unwrap();
    let first = dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["a".into()])
        .await
        .unwrap();
    let second = dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["a".into(), "a".into()])
        .await
        .unwrap();
    assert_eq!((first.created, second.created, second.existing), (1, 0, 2));
    final_state(&dispatcher, &key("e1", "a")).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(receiver.count(), 1);
}

#[tokio::test]
async fn publish_routes_by_event_type_glob_within_the_tenant() {
    let receiver = Receiver::ok().await;
    let dispatcher = Dispatcher::new(config());
    let url = receiver.url();
    for (id, globs) in [
        ("users", vec!["user.*"]),
        ("all", vec!["*"]),
        ("exact", vec!["order.created"]),
    ] {
        dispatcher
            .register_endpoint(Endpoint::new(id, &url).with_event_types(globs))
            .await
            .unwrap();
    }
    dispatcher
        .register_endpoint(Endpoint::new("other-tenant", &url).with_tenant_id("t2"))
        .await
        .unwrap();
    dispatcher
        .register_endpoint(Endpoint::new("off", &url).with_enabled(false))
        .await
        .unwrap();

    let receipt = dispatcher
        .publish(Event::new("u1", "{}").with_event_type("user.created"))
        .await
        .unwrap();
    assert_eq!(receipt.created, 2, "users + all");
    let receipt = dispatcher
        .publish(Event::new("o1", "{}").with_event_type("order.created"))
        .await
        .unwrap();
    assert_eq!(receipt.created, 2, "exact + all");
    let receipt = dispatcher
        .publish(Event::new("x1", "{}").with_event_type("invoice.paid"))
        .await
        .unwrap();
    assert_eq!(receipt.created, 1, "all only");
    for (event, endpoint) in [
        ("u1", "users"),
        ("u1", "all"),
        ("o1", "exact"),
        ("o1", "all"),
        ("x1", "all"),
    ] {
        let record = final_state(&dispatcher, &key(event, endpoint)).await;
        assert!(matches!(
            record.delivery.state,
            DeliveryState::Delivered { .. }
        ));
    }
    assert!(
        dispatcher
            .delivery_status(&key("u1", "exact"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn batching_sends_one_signed_array_and_tracks_each_event() {
    let receiver = Receiver::ok().await;
    let dispatcher = Dispatcher::new(config());
    let endpoint = Endpoint::new("batched", receiver.url())
        .with_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .with_batching(5, Duration::from_millis(300));
    dispatcher.register_endpoint(endpoint).await.unwrap();
    for i in 0..5 {
        dispatcher
            .dispatch(
                Event::new(format!("e{i}"), format!(r#"{{"n":{i}}}"#)).with_event_type("t"),
                vec!["batched".into()],
            )
            .await
            .unwrap();
    }
    for i in 0..5 {
        let record = final_state(&dispatcher, &key(&format!("e{i}"), "batched")).await;
        assert!(matches!(
            record.delivery.state,
            DeliveryState::Delivered { .. }
        ));
    }
    let requests = receiver.received();
    let items: usize = requests
        .iter()
        .map(|r| {
            let receiver = WebhookReceiver::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
            receiver
                .verify_signature(&r.headers, &r.body)
                .expect("batch is signed");
            receiver.parse_batch(&r.body).unwrap().len()
        })
        .sum();
    assert_eq!(items, 5, "every event sent once");
    assert!(
        requests.len() < 5,
        "events were batched: {} requests",
        requests.len()
    );
}

#[tokio::test]
async fn a_strict_endpoint_sends_a_replayed_dead_letter_only_after_the_attempt_under_way() {
    // `changed`: the endpoint is changed while e1 is in flight; the attempt under way
    // still holds the endpoint's turn.
    for (batched, changed) in [(false, false), (true, false), (false, true)] {
        // e0 is refused (dead at once), e1 answered after 1.5 s, the replayed e0 at once.
        let receiver = Receiver::start(|_, n| match n {
            0 => Reply::status(400),
            1 => Reply::ok().after(Duration::from_millis(1500)),
            _ => Reply::ok(),
        })
        .await;
        let dispatcher = Dispatcher::new(config());
        let mut endpoint = Endpoint::new("ordered", receiver.url()).with_ordering(Ordering::Strict);
        if batched {
            endpoint = endpoint.with_batching(5, Duration::from_millis(100));
        }
        dispatcher
            .register_endpoint(endpoint.clone())
            .await
            .unwrap();
        for id in ["e0", "e1"] {
            dispatcher
                .dispatch(Event::new(id, "{}"), vec!["ordered".into()])
                .await
                .unwrap();
        }
        let got = receiver.wait_for(2, WAIT).await;
        if changed {
            dispatcher
                .register_endpoint(endpoint.with_header("x-version", "2"))
                .await
                .unwrap();
        }
        // e1 is in flight; e0, older, comes back first in the endpoint's order.
        assert!(
            dispatcher
                .replay_dlq_entry(&key("e0", "ordered"))
                .await
                .unwrap()
        );
        let got_all = receiver.wait_for(3, WAIT).await;
        if !batched {
            assert_eq!(support::webhook_ids(&got_all), vec!["e0", "e1", "e0"]);
        }
        assert!(
            got_all[2].at >= got[1].at + Duration::from_millis(1500),
            "batched: {batched}, changed: {changed}: the replayed e0 was sent while e1 was in flight"
        );
    }
}

#[tokio::test]
async fn strict_ordering_keeps_dispatch_order_through_retries() {
    let receiver = Receiver::start(|_, n| {
        if n < 2 {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    })
    .await;
    let dispatcher = Dispatcher::new(config());
    let endpoint = Endpoint::new("ordered", receiver.url()).with_ordering(Ordering::Strict);
    dispatcher.register_endpoint(endpoint).await.unwrap();
    for i in 0..5 {
        dispatcher
            .dispatch(Event::new(format!("e{i}"), "{}"), vec!["ordered".into()])
            .await
            .unwrap();
    }
    let got = receiver.wait_for(7, WAIT).await;
    let ids = support::webhook_ids(&got);
    assert_eq!(ids, vec!["e0", "e0", "e0", "e1", "e2", "e3", "e4"]);
}

#[tokio::test]
async fn rate_limits_defer_without_spending_attempts() {
    let receiver = Receiver::ok().await;
    let dispatcher = Dispatcher::new(config());
    dispatcher
        .register_endpoint(Endpoint::new("limited", receiver.url()).with_rate_limit(20, 1))
        .await
        .unwrap();
    let start = Instant::now();
    for i in 0..6 {
        dispatcher
            .dispatch(Event::new(format!("e{i}"), "{}"), vec!["limited".into()])
            .await
            .unwrap();
    }
    for i in 0..6 {
        let record = final_state(&dispatcher, &key(&format!("e{i}"), "limited")).await;
        assert_eq!(record.attempts.len(), 1, "deferral is not an attempt");
    }
    assert!(
        start.elapsed() >= Duration::from_millis(240),
        "6 at 20/s burst 1 take at least 250ms"
    );
    let times: Vec<Instant> = receiver.received().iter().map(|r| r.at).collect();
    let within_first_100ms = times
        .iter()
        .filter(|t| t.duration_since(times[0]) < Duration::from_millis(40))
        .count();
    assert!(within_first_100ms <= 2, "the limit spreads requests out");
}

#[tokio::test]
async fn tenant_rate_limit_applies_across_endpoints() {
    let receiver = Receiver::ok().await;
    let dispatcher = Dispatcher::new(config());
    for id in ["a", "b"] {
        dispatcher
            .register_endpoint(Endpoint::new(id, receiver.url()).with_tenant_id("t"))
            .await
            .unwrap();
    }
    dispatcher.set_tenant_rate_limit("t".into(), 10, 1).await;
    let start = Instant::now();
    for i in 0..2 {
        let event = Event::new(format!("e{i}"), "{}").with_tenant_id("t");
        dispatcher
            .dispatch(event, vec!["a".into(), "b".into()])
            .await
            .unwrap();
    }
    receiver.wait_for(4, WAIT).await;
    assert!(
        start.elapsed() >= Duration::from_millis(280),
        "4 deliveries at 10/s burst 1 across two endpoints"
    );
}

#[tokio::test]
async fn overflow_reject_and_spill() {
    let receiver = Receiver::ok().await;
    let base = DispatcherConfig {
        shard_count: 1,
        shard_queue_size: 3,
        ..config()
    };
    for (policy, expect_reject) in [
        (OverflowPolicy::Reject, true),
        (OverflowPolicy::SpillToStorage, false),
    ] {
        let dispatcher = Dispatcher::new(DispatcherConfig {
            overflow_policy: policy,
            ..base.clone()
        });
        // Disabled: nothing drains, so the queue fills.
        dispatcher
            .register_endpoint(Endpoint::new("paused", receiver.url()).with_enabled(false))
            .await
            .unwrap();
        for i in 0..3 {
            dispatcher
                .dispatch(Event::new(format!("e{i}"), "{}"), vec!["paused".into()])
                .await
                .unwrap();
        }
        let fourth = dispatcher
            .dispatch(Event::new("e3", "{}"), vec!["paused".into()])
            .await;
        if expect_reject {
            assert!(
                matches!(
                    fourth,
                    Err(Error::QueueFull {
                        queued: 3,
                        capacity: 3
                    })
                ),
                "{fourth:?}"
            );
            assert!(fourth.unwrap_err().is_retryable());
            assert!(
                dispatcher
                    .delivery_status(&key("e3", "paused"))
                    .await
                    .unwrap()
                    .is_none(),
                "nothing written"
            );
        } else {
            assert_eq!(fourth.unwrap().created, 1, "spilled to the store");
        }
    }
}

#[tokio::test]
async fn a_removed_endpoints_backlog_leaves_the_queue() {
    let receiver = Receiver::ok().await;
    for (round, policy) in [OverflowPolicy::Reject, OverflowPolicy::Block]
        .into_iter()
        .enumerate()
    {
        let dispatcher = Dispatcher::new(DispatcherConfig {
            shard_count: 1,
            shard_queue_size: 3,
            overflow_policy: policy,
            ..config()
        });
        dispatcher
            .register_endpoint(Endpoint::new("paused", receiver.url()).with_enabled(false))
            .await
            .unwrap();
        for i in 0..3 {
            dispatcher
                .dispatch(Event::new(format!("e{i}"), "{}"), vec!["paused".into()])
                .await
                .unwrap();
        }
        // The queue is full of deliveries that are then removed, never to finish.
        assert!(dispatcher.remove_endpoint(&"paused".into()).await.unwrap());
        dispatcher
            .register_endpoint(Endpoint::new("live", receiver.url()))
            .await
            .unwrap();
        let after = tokio::time::timeout(
            WAIT,
            dispatcher.dispatch(Event::new("after", "{}"), vec!["live".into()]),
        )
        .await;
        assert!(
            matches!(after, Ok(Ok(ref receipt)) if receipt.created == 1),
            "{policy:?}: {after:?}"
        );
        receiver.wait_for(round + 1, WAIT).await;
    }
}

#[tokio::test]
async fn overflow_block_waits_for_room() {
    let receiver = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(100))).await;
    let dispatcher = Arc::new(Dispatcher::new(DispatcherConfig {
        shard_count: 1,
        shard_queue_size: 2,
        overflow_policy: OverflowPolicy::Block,
        ..config()
    }));
    dispatcher
        .register_endpoint(Endpoint::new("a", receiver.url()))
        .await
        .unwrap();
    let start = Instant::now();
    for i in 0..4 {
        dispatcher
            .dispatch(Event::new(format!("e{i}"), "{}"), vec!["a".into()])
            .await
            .unwrap();
    }
    assert!(
        start.elapsed() >= Duration::from_millis(90),
        "the third dispatch waited for a delivery"
    );
    receiver.wait_for(4, WAIT).await;
}

#[tokio::test]
async fn payload_limit_and_bad_input_are_refused_without_writing() {
    let dispatcher = Dispatcher::new(DispatcherConfig {
        max_payload_bytes: 10,
        ..config()
    });
    dispatcher
        .register_endpoint(Endpoint::new("a", "http://127.0.0.1:9/"))
        .await
        .unwrap();
    let big = dispatcher
        .dispatch(Event::new("e1", "01234567890"), vec!["a".into()])
        .await;
    assert!(matches!(
        big,
        Err(Error::PayloadTooLarge {
            size: 11,
            limit: 10
        })
    ));
    let unknown = dispatcher
        .dispatch(Event::new("e2", "{}"), vec!["missing".into()])
        .await;
    assert!(
        matches!(unknown, Err(Error::NotFound { .. })),
        "{unknown:?}"
    );
    let bad_id = dispatcher
        .dispatch(Event::new("has space", "{}"), vec!["a".into()])
        .await;
    assert!(matches!(bad_id, Err(Error::Invalid { field: "id", .. })));
    let bad_url = dispatcher
        .register_endpoint(Endpoint::new("b", "ftp://x"))
        .await;
    assert!(matches!(bad_url, Err(Error::Invalid { field: "url", .. })));
    assert!(dispatcher.endpoint(&"b".into()).await.unwrap().is_none());
    let generated = dispatcher
        .dispatch(Event::new("", "{}"), vec!["a".into()])
        .await
        .unwrap();
    assert_eq!(
        generated.event_id.as_str().len(),
        36,
        "empty id gets a UUIDv7"
    );
}

#[tokio::test]
async fn graceful_shutdown_loses_nothing() {
    let receiver = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(300))).await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    let dispatcher = Dispatcher::new_with_storage(
        DispatcherConfig {
            shutdown_timeout: Duration::from_millis(100),
            ..config()
        },
        store.clone(),
    )
    .await;
    dispatcher
        .register_endpoint(Endpoint::new("a", receiver.url()))
        .await
        .unwrap();
    for i in 0..50 {
        dispatcher
            .dispatch(Event::new(format!("e{i}"), "{}"), vec!["a".into()])
            .await
            .unwrap();
    }
    receiver.wait_for(1, WAIT).await;
    dispatcher.shutdown().await;
    assert!(matches!(
        dispatcher
            .dispatch(Event::new("late", "{}"), vec!["a".into()])
            .await,
        Err(Error::ShuttingDown)
    ));
    for i in 0..50 {
        let record = store
            .get_delivery(&key(&format!("e{i}"), "a"))
            .await
            .unwrap()
            .unwrap();
        assert!(
            !matches!(record.delivery.state, DeliveryState::InFlight { .. }),
            "e{i} left in flight: {:?}",
            record.delivery.state
        );
    }
    // A new dispatcher on the same store finishes the job.
    let fast = Receiver::ok().await;
    let next = Dispatcher::new_with_storage(config(), store.clone()).await;
    next.register_endpoint(Endpoint::new("a", fast.url()))
        .await
        .unwrap();
    for i in 0..50 {
        let record = final_state(&next, &key(&format!("e{i}"), "a")).await;
        assert!(matches!(
            record.delivery.state,
            DeliveryState::Delivered { .. }
        ));
    }
}

#[tokio::test]
async fn a_slow_endpoint_does_not_hold_up_the_others() {
    let slow = Receiver::start(|_, _| Reply::ok().after(Duration::from_secs(2))).await;
    let fast = Receiver::ok().await;
    let dispatcher = Dispatcher::new(DispatcherConfig {
        max_in_flight: 64,
        max_in_flight_per_endpoint: 8,
        request_timeout: Duration::from_secs(5),
        ..config()
    });
    dispatcher
        .register_endpoint(Endpoint::new("slow", slow.url()))
        .await
        .unwrap();
    dispatcher
        .register_endpoint(Endpoint::new("fast", fast.url()))
        .await
        .unwrap();
    for i in 0..200 {
        dispatcher
            .dispatch(Event::new(format!("s{i}"), "{}"), vec!["slow".into()])
            .await
            .unwrap();
    }
    let start = Instant::now();
    for i in 0..100 {
        dispatcher
            .dispatch(Event::new(format!("f{i}"), "{}"), vec!["fast".into()])
            .await
            .unwrap();
    }
    fast.wait_for(100, Duration::from_millis(1500)).await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "fast endpoint finished before one slow response"
    );
    assert!(
        slow.count() <= 8,
        "the slow endpoint is capped at its share: {}",
        slow.count()
    );
}

#[tokio::test]
async fn work_already_in_the_store_is_delivered_on_start() {
    let receiver = Receiver::ok().await;
    let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
    // As an earlier process would have left it: an endpoint and a pending delivery.
    store
        .put_endpoint(&Endpoint::new("a", receiver.url()))
        .await
        .unwrap();
    store
        .enqueue(&Event::new("left", "{}"), &["a".into()], chrono::Utc::now())
        .await
        .unwrap();
    let dispatcher = Dispatcher::new_with_storage(config(), store).await;
    let record = final_state(&dispatcher, &key("left", "a")).await;
    assert!(matches!(
        record.delivery.state,
        DeliveryState::Delivered { .. }
    ));
}

#[tokio::test]
async fn higher_priority_events_overtake_a_backlog() {
    let receiver = Receiver::start(|_, _| Reply::ok().after(Duration::from_millis(100))).await;
    let dispatcher = Dispatcher::new(config());
    let endpoint = Endpoint::new("one-at-a-time", receiver.url()).with_max_in_flight(1);
    dispatcher.register_endpoint(endpoint).await.unwrap();
    dispatcher
        .dispatch(Event::new("l0", "{}"), vec!["one-at-a-time".into()])
        .await
        .unwrap();
    receiver.wait_for(1, WAIT).await;
    for id in ["l1", "l2"] {
        dispatcher
            .dispatch(Event::new(id, "{}"), vec!["one-at-a-time".into()])
            .await
            .unwrap();
    }
    let urgent = Event::new("urgent", "{}").with_priority(5);
    dispatcher
        .dispatch(urgent, vec!["one-at-a-time".into()])
        .await
        .unwrap();
    let got = receiver.wait_for(4, WAIT).await;
    let ids = support::webhook_ids(&got);
    assert_eq!(ids, ["l0", "urgent", "l1", "l2"]);
}

#[tokio::test]
async fn an_open_circuit_stays_open_when_the_endpoint_changes_but_not_its_url() {
    let receiver = Receiver::start(|_, _| Reply::status(503)).await;
    let dispatcher = Dispatcher::new(DispatcherConfig {
        default_circuit_breaker: CircuitBreakerConfig {
            failure_threshold: 1,
            open_timeout: Duration::from_secs(60),
            ..CircuitBreakerConfig::default()
        },
        ..config()
    });
    let endpoint = Endpoint::new("failing", receiver.url());
    dispatcher
        .register_endpoint(endpoint.clone())
        .await
        .unwrap();
    dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["failing".into()])
        .await
        .unwrap();
    // One 503 opens the circuit; e1's retry then waits for it.
    receiver.wait_for(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    dispatcher
        .register_endpoint(endpoint.with_header("x-version", "2"))
        .await
        .unwrap();
    dispatcher
        .dispatch(Event::new("e2", "{}"), vec!["failing".into()])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.count(),
        1,
        "a request went out through an open circuit after a header change"
    );
}

#[tokio::test]
async fn a_rate_limit_carries_on_when_the_endpoint_changes_but_not_its_limit() {
    let receiver = Receiver::ok().await;
    let dispatcher = Dispatcher::new(config());
    let endpoint = Endpoint::new("limited", receiver.url()).with_rate_limit(1, 1);
    dispatcher
        .register_endpoint(endpoint.clone())
        .await
        .unwrap();
    dispatcher
        .dispatch(Event::new("e1", "{}"), vec!["limited".into()])
        .await
        .unwrap();
    receiver.wait_for(1, WAIT).await;
    dispatcher
        .register_endpoint(endpoint.with_header("x-version", "2"))
        .await
        .unwrap();
    dispatcher
        .dispatch(Event::new("e2", "{}"), vec!["limited".into()])
        .await
        .unwrap();
    let got = receiver.wait_for(2, WAIT).await;
    assert!(
        got[1].at >= got[0].at + Duration::from_millis(800),
        "the second request went out {:?} after the first, above 1 per second",
        got[1].at - got[0].at
    );
}
