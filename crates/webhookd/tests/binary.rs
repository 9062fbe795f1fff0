//! The real binary: configured through environment variables, logs JSON without
//! secrets, exits 0 on SIGTERM; and the `mock-receiver` subcommand.

mod common;

use std::{
    io::{BufRead as _, BufReader, Read as _},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use common::{Call, healthy, receiver, wait_status};
use hyper::Method;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_webhookd");

/// Lines of a child's stream, read on a thread.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines until one is a JSON object whose `message` is `message`; returns all
/// lines read and that object.
fn wait_line(rx: &mpsc::Receiver<String>, message: &str, seen: &mut Vec<String>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no {message:?} line; got:\n{}", seen.join("\n")));
        seen.push(line.clone());
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == message
        {
            return v;
        }
    }
}

fn terminate(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    common::wait_exit(child, Duration::from_secs(30))
}

fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "DATABASE_URL",
        "WEBHOOKD_STORE",
        "WEBHOOKD_API_TOKEN",
        "WEBHOOKD_TENANT_TOKENS",
        "WEBHOOK_SECRET",
        "TARGET_URL",
        "WEBHOOKD_LISTEN",
        "MOCK_RECEIVER_LISTEN",
        "WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_LOG", "info")
}

/// `webhookd mock-receiver` answering every request 200 after up to `max_delay`
/// seconds, verifying with `secret` if given: the child, its address and its stdout.
fn mock_receiver(max_delay: &str, secret: Option<&str>) -> (Child, String, mpsc::Receiver<String>) {
    let mut command = Command::new(BIN);
    clean_env(&mut command)
        .args([
            "mock-receiver",
            "--listen",
            "127.0.0.1:0",
            "--failure-rate",
            "0",
        ])
        .args([
            "--hang-rate",
            "0",
            "--max-delay",
            max_delay,
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(secret) = secret {
        command.env("WEBHOOK_SECRET", secret);
    }
    let mut child = command.spawn().unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let stdout = lines(child.stdout.take().unwrap());
    let listening = wait_line(&stderr, "mock receiver listening", &mut Vec::new());
    let addr = listening["addr"].as_str().unwrap().to_owned();
    (child, addr, stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_seed_003_environment_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "seed-003-shared-secret";
    let token = "operator-token-abc";
    let target = receiver(healthy(Some(secret))).await;
    let mut child = clean_env(&mut Command::new(BIN))
        .args(["--log-format", "json"])
        .env("WEBHOOKD_LISTEN", "127.0.0.1:0")
        .env("WEBHOOKD_DATA_DIR", dir.path().join("data"))
        .env("WEBHOOKD_API_TOKEN", token)
        .env("WEBHOOKD_TENANT_TOKENS", "acme=acme-tok,globex=globex-tok")
        // Any of true/1/yes/on, as with other services' boolean variables.
        .env("WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS", "yes")
        .env("WEBHOOK_SECRET", secret)
        .env("TARGET_URL", target.url("/webhook"))
        .env("WORKER_POLL_INTERVAL", "0.05")
        .env("HTTP_TIMEOUT", "2")
        .env("MAX_ATTEMPTS", "5")
        .env("BACKOFF_BASE_SECONDS", "0.05")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let stdout = lines(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    let listening = wait_line(&stderr, "listening", &mut seen);
    let addr = listening["addr"].as_str().unwrap().to_owned();
    let url = |path: &str| format!("http://{addr}{path}");

    let health = Call::new(Method::GET, url("/healthz")).send().await;
    assert_eq!(health.expect(200), json!({"status": "ok"}));
    Call::new(Method::POST, url("/events"))
        .json(&json!({"payload": {"hello": "world"}}))
        .send()
        .await
        .expect_error(401, None);
    let accepted = Call::new(Method::POST, url("/events"))
        .token(token)
        .json(&json!({"payload": {"hello": "world"}}))
        .send()
        .await
        .expect(202);
    let id = accepted["id"].as_str().unwrap().to_owned();
    // The same server, seen through the test helpers.
    let server = common::Server::attach(&addr);
    wait_status(&server, Some(token), &id, "delivered").await;
    assert_eq!(target.stats().counts().succeeded, 1);
    assert_eq!(target.stats().counts().bad_signature, 0);
    // A tenant token works too and is scoped.
    Call::new(Method::GET, url(&format!("/events/{id}")))
        .token("acme-tok")
        .send()
        .await
        .expect_error(404, None);

    let status = terminate(&mut child);
    assert!(status.success(), "exit status {status:?}");
    while let Ok(line) = stderr.recv_timeout(Duration::from_secs(5)) {
        seen.push(line);
    }
    while let Ok(line) = stdout.try_recv() {
        seen.push(line);
    }
    let logs = seen.join("\n");
    assert!(logs.contains("shutdown complete"), "{logs}");
    for secret_text in [secret, token, "acme-tok", "globex-tok"] {
        assert!(
            !logs.contains(secret_text),
            "{secret_text} leaked into\n{logs}"
        );
    }
    for line in &seen {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mock_receiver_subcommand_verifies_and_logs_one_json_line_per_request() {
    let secret = webhook_sdk::generate_secret();
    let (mut child, addr, stdout) = mock_receiver("0", Some(&secret));
    let url = format!("http://{addr}/webhook");

    let body = br#"{"n":1}"#;
    let unsigned = Call::new(Method::POST, url.clone())
        .raw("application/json", &body[..])
        .send()
        .await;
    assert_eq!(unsigned.status.as_u16(), 401);
    let key = webhook_sdk::SigningKey::new(secret.as_bytes());
    let mut signed = Call::new(Method::POST, url).raw("application/json", &body[..]);
    for (name, value) in webhook_sdk::SignatureScheme::StandardWebhooks.sign(
        &key,
        "msg_42",
        chrono::Utc::now().timestamp(),
        body,
    ) {
        signed = signed.header(&name, &value);
    }
    assert_eq!(signed.send().await.status.as_u16(), 200);

    let first: Value =
        serde_json::from_str(&stdout.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    let second: Value =
        serde_json::from_str(&stdout.recv_timeout(Duration::from_secs(10)).unwrap()).unwrap();
    assert_eq!(first["outcome"], "bad_signature");
    assert_eq!(first["status"], 401);
    assert_eq!(second["outcome"], "ok");
    assert_eq!(second["webhook_id"], "msg_42");
    assert_eq!(second["signature"], "valid");
    assert!(second["time"].is_string());

    let status = terminate(&mut child);
    assert!(status.success(), "exit status {status:?}");
}

/// Settings that cannot work stop webhookd at start with a message naming the setting
/// (never its password), before anything is created.
#[test]
fn unusable_settings_stop_the_binary_before_it_creates_anything() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (var, value, expected) in [
        (
            "TARGET_URL",
            "http://127.0.0.1:9/hook",
            "--allow-private-destinations",
        ),
        (
            "DATABASE_URL",
            "rediss://u:pw-1@127.0.0.1:1/",
            "rediss:// is not supported",
        ),
        ("WEBHOOK_SECRET", "whsec_pw-1!", "WEBHOOK_SECRET"),
    ] {
        let mut child = clean_env(&mut Command::new(BIN))
            .env("WEBHOOKD_LISTEN", "127.0.0.1:0")
            .env("WEBHOOKD_DATA_DIR", &data)
            .env(var, value)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let status = common::wait_exit(&mut child, Duration::from_secs(30));
        let mut shown = String::new();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            BufReader::new(stream).read_to_string(&mut shown).unwrap();
        }
        assert_eq!(status.code(), Some(1), "{var}: {shown}");
        assert!(shown.contains(expected), "{var}: {shown}");
        assert!(!shown.contains("pw-1"), "{var}: {shown}");
        assert!(!data.exists(), "{var}: the data directory was created");
    }
}

/// A request whose client gives up during the mock receiver's delay is logged as
/// `client_gone`, not as the answer it never got.
#[test]
fn the_mock_receiver_logs_a_client_that_gave_up_as_gone() {
    use std::io::Write as _;
    let (mut child, addr, stdout) = mock_receiver("5", None);
    // The delay is random in [0, 5 s]: one long enough to give up during is certain
    // within a few requests.
    let line = (0..5)
        .find_map(|i| {
            let mut stream = std::net::TcpStream::connect(&addr).unwrap();
            write!(
                stream,
                "POST /hook HTTP/1.1\r\nhost: x\r\nwebhook-id: gone-{i}\r\ncontent-length: 2\r\n\r\n{{}}"
            )
            .unwrap();
            std::thread::sleep(Duration::from_millis(100));
            drop(stream);
            let line = stdout.recv_timeout(Duration::from_secs(10)).unwrap();
            let line: Value = serde_json::from_str(&line).unwrap();
            (line["delay_ms"].as_u64().unwrap() > 500).then_some(line)
        })
        .expect("a delay over 500 ms in 5 requests");
    assert_eq!(line["outcome"], "client_gone", "{line}");
    assert_eq!(line["status"], Value::Null, "{line}");
    assert!(terminate(&mut child).success());
}

/// A second SIGTERM during a graceful shutdown (held up here by a delivery to a
/// receiver that never answers) exits at once.
#[test]
fn a_second_signal_exits_at_once() {
    use std::io::{Read as _, Write as _};
    let dir = tempfile::tempdir().unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut child = clean_env(&mut Command::new(BIN))
        .args(["--log-format", "json", "--shutdown-timeout", "60"])
        .env("WEBHOOKD_LISTEN", "127.0.0.1:0")
        .env("WEBHOOKD_DATA_DIR", dir.path().join("data"))
        .env("WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS", "true")
        .env(
            "TARGET_URL",
            format!("http://{}/hook", silent.local_addr().unwrap()),
        )
        .env("HTTP_TIMEOUT", "60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = lines(child.stderr.take().unwrap());
    let listening = wait_line(&stderr, "listening", &mut Vec::new());
    let mut api = std::net::TcpStream::connect(listening["addr"].as_str().unwrap()).unwrap();
    let body = r#"{"payload":{}}"#;
    write!(
        api,
        "POST /events HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    api.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    // The delivery is under way once its request reaches the silent receiver.
    let (mut delivery, _) = silent.accept().unwrap();
    let _ = delivery.read(&mut [0u8; 64]).unwrap();
    let signal = |child: &Child| {
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
    };
    signal(&child);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the first signal waits for the delivery under way"
    );
    signal(&child);
    let status = common::wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(130));
}
