//! End to end: webhookd and the chaotic mock receiver in one process; and a restart
//! (the app dropped as in a crash, a new one built on the same data directory).

mod common;

use std::time::Duration;

use common::{Server, free_port, healthy, receiver, settings, wait_for, wait_status};
use serde_json::json;
use tokio::net::TcpListener;
use webhookd::{
    mock::{MockConfig, MockReceiver},
    settings::retry_policy,
};

const EVENTS: usize = 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_is_delivered_through_failures_and_hangs() {
    let secret = webhook_sdk::generate_secret();
    // Seed 003's chaos: 70 % failures and 8 % hangs, with short delays.
    let chaos = receiver(MockConfig {
        failure_rate: 0.7,
        hang_rate: 0.08,
        max_delay: Duration::from_millis(20),
        secret: Some(secret.clone()),
        log_requests: false,
        ..MockConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut s = settings(dir.path());
    // Seed 003's knobs: WEBHOOK_SECRET, TARGET_URL, HTTP_TIMEOUT, BACKOFF_BASE_SECONDS,
    // MAX_ATTEMPTS.
    s.webhook_secret = Some(secret.clone());
    s.target_url = Some(chaos.url("/webhook"));
    s.dispatcher.request_timeout = Duration::from_millis(300);
    s.dispatcher.default_retry_policy = retry_policy(Some(Duration::from_millis(20)), Some(200));
    let server = Server::start(s).await;

    let mut ids = Vec::new();
    for i in 0..EVENTS {
        // Half to the default target, half with target_url as seed 003 sends them.
        let body = if i % 2 == 0 {
            json!({"payload": {"n": i}})
        } else {
            json!({"payload": {"n": i}, "target_url": chaos.url("/webhook")})
        };
        let accepted = server.post("/events").json(&body).send().await.expect(202);
        ids.push(accepted["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let event = wait_status(&server, None, id, "delivered").await;
        let d = &event["deliveries"][0];
        assert_eq!(d["last_status_code"], 200);
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len() as u64, d["attempt_count"].as_u64().unwrap());
        assert_eq!(attempts.last().unwrap()["status"], 200);
    }

    let counts = chaos.stats().counts();
    assert_eq!(
        counts.bad_signature, 0,
        "every request carried a valid signature"
    );
    assert!(counts.failed > 0, "the receiver failed some: {counts:?}");
    let delivered = chaos.stats().delivered();
    for id in &ids {
        assert!(delivered.contains_key(id), "{id} never answered 200");
    }
    let metrics = server.get("/metrics").send().await.text();
    assert!(
        metrics.contains(&format!("webhookd_deliveries_delivered_total {EVENTS}\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains("webhookd_deliveries_dead_total 0\n"),
        "{metrics}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_accepted_is_delivered_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let secret = webhook_sdk::generate_secret();
    // The receiver is down during the first run.
    let port = free_port().await;
    let target = format!("http://127.0.0.1:{port}/webhook");
    let config = || {
        let mut s = settings(dir.path());
        s.webhook_secret = Some(secret.clone());
        s.target_url = Some(target.clone());
        s.dispatcher.default_retry_policy =
            retry_policy(Some(Duration::from_millis(100)), Some(1000));
        s
    };

    let first = Server::start(config()).await;
    let mut ids = Vec::new();
    for i in 0..20 {
        let accepted = first
            .post("/events")
            .json(&json!({"payload": {"n": i}, "event_type": "restart.test"}))
            .send()
            .await
            .expect(202);
        ids.push(accepted["id"].as_str().unwrap().to_owned());
    }
    // Some attempts failed (connection refused) before the crash.
    wait_for("failed attempts", Duration::from_secs(30), || async {
        let text = first.get("/metrics").send().await.text();
        text.lines()
            .find_map(|l| l.strip_prefix("webhookd_deliveries_retried_total "))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n >= 20)
    })
    .await;
    first.crash().await;

    // The receiver comes up, and webhookd again on the same data directory.
    let listener = TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    let mock = MockReceiver::start(healthy(Some(&secret)), listener).unwrap();
    let second = Server::start(config()).await;
    let mut attempts = 0;
    for id in &ids {
        let event = wait_status(&second, None, id, "delivered").await;
        attempts += event["deliveries"][0]["attempt_count"].as_u64().unwrap();
    }
    assert!(
        attempts >= 40,
        "the attempts before the crash count: {attempts}"
    );
    let delivered = mock.stats().delivered();
    for id in &ids {
        assert!(delivered.contains_key(id), "{id} was not delivered");
    }
    assert_eq!(mock.stats().counts().bad_signature, 0);

    // A graceful stop and another start: still all there, nothing delivered again.
    second.stop().await;
    let third = Server::start(config()).await;
    for id in &ids {
        wait_status(&third, None, id, "delivered").await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(mock.stats().counts().succeeded, ids.len() as u64);
    third.stop().await;
}

/// A request the mock receiver leaves hanging (for an hour by default) is answered
/// 503 when the receiver shuts down, so the shutdown does not wait out the hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_receiver_ends_hanging_requests_when_it_shuts_down() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = MockConfig {
        hang_rate: 1.0,
        log_requests: false,
        ..MockConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(webhookd::mock::run(config, listener, async {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"POST /hook HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut answer = [0u8; 12];
    assert!(
        tokio::time::timeout(Duration::from_millis(500), stream.read(&mut answer))
            .await
            .is_err(),
        "the request hangs"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut answer))
        .await
        .expect("answered at shutdown")
        .unwrap();
    assert_eq!(&answer, b"HTTP/1.1 503");
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the receiver stopped")
        .unwrap()
        .unwrap();
}

/// A client that stops halfway through its request does not hold up a shutdown: the
/// requests in progress get the shutdown timeout (1 s here), then the shutdown goes on
/// without them (the stalled event was never acknowledged).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_does_not_hold_up_the_shutdown() {
    use tokio::io::AsyncWriteExt as _;
    let dir = tempfile::tempdir().unwrap();
    let app = webhookd::App::build(settings(dir.path())).await.unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.serve(listener, async {
        let _ = stopped.await;
    }));
    let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
    stalled
        .write_all(
            b"POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
              content-length: 100\r\n\r\n{\"payload\":",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the shutdown finished with the client still stalled")
        .unwrap()
        .unwrap();
    drop(stalled);
}
