//! No secret ever reaches the logs: the real binary, at `RUST_LOG=trace` with JSON
//! logs, configured with an admin token, tenant tokens, an encryption key, a
//! `WEBHOOK_SECRET` and a store URL holding a password, does everything (endpoints with
//! given and generated secrets, deliveries that succeed and fail, the dead-letter queue
//! and its replay, a secret rotation, error paths carrying secrets in their bodies and
//! headers); then every line it wrote on stdout and stderr is searched for every
//! secret, in every form it could take (as given, base64, hex, decoded bytes). Start-up
//! failures with secrets in their arguments are searched the same way, and so is the
//! `Debug` output of the configuration.

mod common;

use std::{
    io::Read as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use base64::Engine as _;
use common::{Call, Server, healthy, receiver, wait_for, wait_status};
use hyper::Method;
use serde_json::{Value, json};
use webhookd::mock::MockConfig;

const BIN: &str = env!("CARGO_BIN_EXE_webhookd");

fn random_text(prefix: &str) -> String {
    let bytes: [u8; 18] = rand::random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Every form in which `secret` could show up in text.
fn forms(secret: &str) -> Vec<String> {
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
    let mut raw: Vec<Vec<u8>> = vec![secret.as_bytes().to_vec()];
    let mut out = vec![secret.to_owned()];
    // A whsec_ secret, or an encryption key: base64 text standing for raw bytes.
    let b64 = secret.strip_prefix("whsec_").unwrap_or(secret);
    if b64 != secret {
        out.push(b64.to_owned());
    }
    if let Ok(decoded) = STANDARD.decode(b64)
        && decoded.len() >= 16
    {
        raw.push(decoded);
    }
    for bytes in raw {
        out.push(STANDARD_NO_PAD.encode(&bytes));
        out.push(URL_SAFE_NO_PAD.encode(&bytes));
        out.push(hex::encode(&bytes));
        out.push(hex::encode_upper(&bytes));
        // `Debug` of a byte slice, and the bytes themselves.
        out.push(format!("{bytes:?}").trim_end_matches(']').to_owned());
        if let Ok(text) = std::str::from_utf8(&bytes) {
            out.push(text.to_owned());
        }
    }
    out.retain(|f| f.len() >= 12);
    out.sort();
    out.dedup();
    out
}

/// Every line of `logs` containing any form of any secret.
fn leaks(logs: &str, secrets: &[(&str, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (name, secret) in secrets {
        for form in forms(secret) {
            for line in logs.lines().filter(|l| l.contains(&form)) {
                found.push(format!("{name} (as {form:?}) in: {line}"));
            }
        }
    }
    found
}

fn clean(cmd: &mut Command) -> &mut Command {
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy().into_owned();
        if var.starts_with("WEBHOOK")
            || var == "DATABASE_URL"
            || var == "TARGET_URL"
            || var.starts_with("RUST_LOG")
        {
            cmd.env_remove(var);
        }
    }
    cmd.env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
}

/// Runs a webhookd that is expected to exit by itself; returns its exit code and output.
fn run_to_exit(cmd: &mut Command) -> (Option<i32>, String) {
    let mut child = cmd.spawn().unwrap();
    let status = common::wait_exit(&mut child, Duration::from_secs(60));
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    (status.code(), out)
}

struct Secrets {
    admin: String,
    acme: String,
    globex: String,
    key: String,
    implicit: String,
    db_password: String,
}

impl Secrets {
    fn new() -> Self {
        Self {
            admin: random_text("admin-"),
            acme: random_text("acme-"),
            globex: random_text("globex-"),
            key: webhook_dispatcher::SealingKey::generate_base64().unwrap(),
            implicit: random_text("implicit-"),
            db_password: random_text("dbpw"),
        }
    }

    fn named(&self) -> Vec<(&'static str, String)> {
        vec![
            ("admin token", self.admin.clone()),
            ("acme token", self.acme.clone()),
            ("globex token", self.globex.clone()),
            ("encryption key", self.key.clone()),
            ("WEBHOOK_SECRET", self.implicit.clone()),
            ("database password", self.db_password.clone()),
        ]
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_run_at_trace_level_logs_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let s = Secrets::new();
    let given = webhook_sdk::generate_secret();
    let raw_secret = random_text("raw-endpoint-secret-");
    let rotated = webhook_sdk::generate_secret();

    let given_hook = receiver(healthy(Some(&given))).await;
    let raw_hook = receiver(healthy(Some(&raw_secret))).await;
    let implicit_hook = receiver(healthy(Some(&s.implicit))).await;
    let failing = receiver(MockConfig {
        failure_rate: 1.0,
        ..healthy(None)
    })
    .await;

    let mut child = clean(&mut Command::new(BIN))
        .args(["--log-format", "json", "--listen", "127.0.0.1:0"])
        .env("WEBHOOKD_DATA_DIR", dir.path().join("data"))
        .env("WEBHOOKD_API_TOKEN", &s.admin)
        .env(
            "WEBHOOKD_TENANT_TOKENS",
            format!("acme={},globex={}", s.acme, s.globex),
        )
        .env("WEBHOOKD_SECRET_ENCRYPTION_KEY", &s.key)
        .env("WEBHOOK_SECRET", &s.implicit)
        .env("WEBHOOKD_ALLOW_PRIVATE_DESTINATIONS", "true")
        .env("WORKER_POLL_INTERVAL", "0.05")
        .env("HTTP_TIMEOUT", "2")
        .env("MAX_ATTEMPTS", "2")
        // The failing receiver must not open the breaker (that defers, for a minute).
        .env("WEBHOOKD_CIRCUIT_BREAKER_THRESHOLD", "100")
        .env("BACKOFF_BASE_SECONDS", "0.05")
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let read_all = |mut stream: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stream.read_to_string(&mut text);
            text
        })
    };
    // stderr is read line by line until "listening", then to the end.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stderr_reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let stdout_reader = read_all(Box::new(stdout));
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("webhookd did not start");
        if let Ok(v) = serde_json::from_str::<Value>(&line)
            && v["message"] == "listening"
        {
            break v["addr"].as_str().unwrap().to_owned();
        }
    };
    let server = Server::attach(&addr);
    let call = |method: Method, path: &str| Call::new(method, server.url(path));

    // Endpoints: a given whsec_ secret (acme), a generated one (globex, failing
    // receiver), a raw-bytes secret (no tenant).
    call(Method::POST, "/v1/endpoints")
        .token(&s.acme)
        .json(&json!({"id": "acme-ep", "url": given_hook.url("/h"), "secret": given, "event_types": ["order.*"]}))
        .send()
        .await
        .expect(201);
    let created = call(Method::POST, "/v1/endpoints")
        .token(&s.admin)
        .json(&json!({"id": "globex-ep", "url": failing.url("/h"), "tenant": "globex"}))
        .send()
        .await
        .expect(201);
    let generated = created["secret"].as_str().unwrap().to_owned();
    call(Method::POST, "/v1/endpoints")
        .token(&s.admin)
        .json(&json!({"id": "raw-ep", "url": raw_hook.url("/h"), "secret": raw_secret}))
        .send()
        .await
        .expect(201);

    // Events: delivered, dead-lettered, delivered, and one to an implicit endpoint.
    let send = |token: &str, body: Value| call(Method::POST, "/events").token(token).json(&body);
    send(
        &s.acme,
        json!({"payload": {"n": 1}, "event_type": "order.created", "id": "e-acme"}),
    )
    .send()
    .await
    .expect(202);
    send(
        &s.globex,
        json!({"payload": {"n": 2}, "event_type": "x", "id": "e-globex"}),
    )
    .send()
    .await
    .expect(202);
    send(
        &s.admin,
        json!({"payload": {"n": 3}, "event_type": "x", "id": "e-raw"}),
    )
    .send()
    .await
    .expect(202);
    send(
        &s.admin,
        json!({"payload": {"n": 4}, "target_url": implicit_hook.url("/seed"), "id": "e-implicit"}),
    )
    .send()
    .await
    .expect(202);
    wait_status(&server, Some(&s.acme), "e-acme", "delivered").await;
    wait_status(&server, Some(&s.admin), "e-raw", "delivered").await;
    wait_status(&server, Some(&s.admin), "e-implicit", "delivered").await;
    wait_status(&server, Some(&s.globex), "e-globex", "dead").await;
    for hook in [&given_hook, &raw_hook, &implicit_hook] {
        assert_eq!(hook.stats().counts().succeeded, 1);
        assert_eq!(hook.stats().counts().bad_signature, 0);
    }

    // The dead-letter queue: listed, replayed one by one and all at once.
    let dead = call(Method::GET, "/v1/dlq")
        .token(&s.globex)
        .send()
        .await
        .expect(200);
    assert_eq!(dead["dead_letters"].as_array().unwrap().len(), 1, "{dead}");
    call(Method::POST, "/v1/dlq/replay/e-globex/globex-ep")
        .token(&s.globex)
        .send()
        .await
        .expect(200);
    wait_for(
        "the replayed delivery to fail again",
        Duration::from_secs(30),
        || async { failing.stats().counts().failed >= 4 },
    )
    .await;
    wait_status(&server, Some(&s.globex), "e-globex", "dead").await;
    call(Method::POST, "/v1/dlq/replay")
        .token(&s.admin)
        .send()
        .await
        .expect(200);
    wait_for(
        "the second replay to fail",
        Duration::from_secs(30),
        || async { failing.stats().counts().failed >= 6 },
    )
    .await;

    // A rotation: the acme endpoint gets a new secret, and delivers with it.
    let rotated_hook = receiver(healthy(Some(&rotated))).await;
    call(Method::PUT, "/v1/endpoints/acme-ep")
        .token(&s.acme)
        .json(
            &json!({"url": rotated_hook.url("/h"), "secret": rotated, "event_types": ["order.*"]}),
        )
        .send()
        .await
        .expect(200);
    send(
        &s.acme,
        json!({"payload": {"n": 5}, "event_type": "order.paid", "id": "e-rotated"}),
    )
    .send()
    .await
    .expect(202);
    wait_status(&server, Some(&s.acme), "e-rotated", "delivered").await;
    assert_eq!(rotated_hook.stats().counts().succeeded, 1);

    // Error paths carrying secrets: wrong tokens (among them another secret), bodies
    // with secrets that are malformed, of the wrong type, or in unknown fields.
    for token in [
        s.key.as_str(),
        given.as_str(),
        &format!("{}x", s.admin),
        &s.admin[..s.admin.len() - 1],
    ] {
        call(Method::GET, "/v1/endpoints")
            .token(token)
            .send()
            .await
            .expect_error(401, None);
    }
    call(Method::GET, "/v1/endpoints")
        .header("authorization", &format!("Basic {}", s.acme))
        .send()
        .await
        .expect_error(401, None);
    call(Method::GET, "/metrics")
        .token(&s.acme)
        .send()
        .await
        .expect_error(403, None);
    let bad_bodies = [
        format!(r#"{{"url": "https://example.com/", "secret": "{given}""#),
        format!(
            r#"{{"url": "https://example.com/", "secret": "{given}", "scret": "{raw_secret}"}}"#
        ),
        format!(r#"{{"url": "https://example.com/", "max_in_flight": "{given}"}}"#),
        format!(
            r#"{{"url": "https://example.com/", "secret": "{given}", "headers": {{"x": "{}"}}}}"#,
            "v".repeat(9000)
        ),
        format!(r#"{{"url": "https://example.com/", "secret": "{given}", "tenant": "globex"}}"#),
        format!(r#"{{"url": "https://example.com/", "secret": "sealed:v1:{given}"}}"#),
    ];
    for body in &bad_bodies {
        let reply = call(Method::POST, "/v1/endpoints")
            .token(&s.acme)
            .raw("application/json", body.clone())
            .send()
            .await;
        assert!(reply.status.is_client_error(), "{body}: {}", reply.text());
    }
    call(Method::POST, "/events")
        .token(&s.acme)
        .raw(
            "application/json",
            format!(r#"{{"payload": 1, "id": "{given}/x"}}"#),
        )
        .send()
        .await
        .expect_error(422, Some("id"));
    // Paths are logged as their route template, so not even an id meant to be a
    // secret reaches the logs.
    call(Method::GET, &format!("/events/{given}"))
        .token(&s.acme)
        .send()
        .await
        .expect_error(404, None);
    // Reads that handle secrets: the endpoints (sealed in the store, opened here).
    let listed = call(Method::GET, "/v1/endpoints")
        .token(&s.admin)
        .send()
        .await
        .expect(200);
    assert_eq!(listed["endpoints"].as_array().unwrap().len(), 4, "{listed}");
    assert!(!listed.to_string().contains(&rotated));
    let metrics = call(Method::GET, "/metrics").token(&s.admin).send().await;
    assert_eq!(metrics.status.as_u16(), 200, "{}", metrics.text());

    // Stop, and collect everything it wrote.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("webhookd did not exit after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(exit.success(), "{exit:?}");
    let logs = format!(
        "{}\n{}",
        stderr_reader.join().unwrap(),
        stdout_reader.join().unwrap()
    );

    // The run did log at trace level, about the things that carry secrets.
    for expected in [
        "endpoint created",
        "endpoint replaced",
        "dead letters replayed",
        "endpoint secrets are encrypted in the store",
        "\"level\":\"TRACE\"",
        "\"status\":401",
        "shutdown complete",
    ] {
        assert!(
            logs.contains(expected),
            "no {expected:?} in the logs:\n{logs}"
        );
    }
    let mut secrets = s.named();
    secrets.extend([
        ("given endpoint secret", given.clone()),
        ("generated endpoint secret", generated.clone()),
        ("raw endpoint secret", raw_secret.clone()),
        ("rotated endpoint secret", rotated.clone()),
    ]);
    let found = leaks(&logs, &secrets);
    assert!(
        found.is_empty(),
        "secrets in the logs:\n{}",
        found.join("\n")
    );

    // Nor are the endpoint secrets in the store's file: it holds them encrypted.
    let file = std::fs::read(dir.path().join("data").join(webhookd::app::REDB_FILE)).unwrap();
    let file = String::from_utf8_lossy(&file);
    let found = leaks(&file, &secrets[6..]);
    assert!(
        found.is_empty(),
        "secrets in the store file: {}",
        found.len()
    );
}

#[test]
fn start_up_failures_do_not_show_secrets() {
    let s = Secrets::new();
    let dir = tempfile::tempdir().unwrap();
    let mut outputs = Vec::new();
    // Unreachable PostgreSQL and Redis with passwords in their URLs.
    for url in [
        format!(
            "postgres://webhookd:{}@127.0.0.1:1/hooks?connect_timeout=2",
            s.db_password
        ),
        format!("redis://default:{}@127.0.0.1:1/0", s.db_password),
    ] {
        let (code, out) = run_to_exit(
            clean(&mut Command::new(BIN))
                .args(["--log-format", "json", "--listen", "127.0.0.1:0"])
                .env("WEBHOOKD_DATA_DIR", dir.path())
                .env("DATABASE_URL", &url)
                .env("WEBHOOKD_API_TOKEN", &s.admin),
        );
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains("cannot start"), "{out}");
        outputs.push(out);
    }
    // A store URL of a kind webhookd does not support: refused, not shown.
    let (code, out) = run_to_exit(
        clean(&mut Command::new(BIN))
            .args(["--log-format", "json", "--listen", "127.0.0.1:0"])
            .env("WEBHOOKD_DATA_DIR", dir.path())
            .env(
                "WEBHOOKD_STORE",
                format!("mysql://webhookd:{}@db.internal/hooks", s.db_password),
            ),
    );
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("mysql:// is not supported"), "{out}");
    outputs.push(out);
    // Malformed secret values on the command line and in the environment.
    for (args, env) in [
        (
            vec![
                "--tenant-token".to_owned(),
                format!("not/a/tenant={}", s.acme),
            ],
            None,
        ),
        (
            vec![],
            Some((
                "WEBHOOKD_TENANT_TOKENS",
                format!("acme={},bad tenant={}", s.acme, s.globex),
            )),
        ),
        (
            vec!["--secret-encryption-key".to_owned(), s.key[..20].to_owned()],
            None,
        ),
        (
            vec![],
            Some(("WEBHOOKD_SECRET_ENCRYPTION_KEY", format!("{}AAAA", s.key))),
        ),
    ] {
        let mut cmd = Command::new(BIN);
        clean(&mut cmd)
            .args(&args)
            .env("WEBHOOKD_DATA_DIR", dir.path());
        if let Some((var, value)) = env {
            cmd.env(var, value);
        }
        let (code, out) = run_to_exit(&mut cmd);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains("not shown, it is secret"), "{out}");
        outputs.push(out);
    }
    // A key that does not fit the stored secrets.
    let other = webhook_dispatcher::SealingKey::generate_base64().unwrap();
    let data = dir.path().join("sealed");
    for (key, expect) in [
        (&s.key, None),
        (&other, Some("cannot read the endpoint secrets")),
    ] {
        let mut cmd = Command::new(BIN);
        clean(&mut cmd)
            .args(["--listen", "127.0.0.1:0"])
            .env("WEBHOOKD_DATA_DIR", &data)
            .env("WEBHOOKD_SECRET_ENCRYPTION_KEY", key);
        if expect.is_none() {
            // Store one sealed secret with the first key, in-process.
            let runtime = tokio::runtime::Runtime::new().unwrap();
            runtime.block_on(async {
                let mut settings = common::settings(&data);
                settings.secret_encryption_key =
                    Some(webhook_dispatcher::SealingKey::from_base64(key).unwrap());
                let server = Server::start(settings).await;
                server
                    .post("/v1/endpoints")
                    .json(&json!({"id": "sealed", "url": "https://example.com/", "secret": s.implicit}))
                    .send()
                    .await
                    .expect(201);
                server.stop().await;
            });
            continue;
        }
        let (code, out) = run_to_exit(&mut cmd);
        assert_eq!(code, Some(1), "{out}");
        assert!(out.contains(expect.unwrap()), "{out}");
        outputs.push(out);
    }
    let logs = outputs.join("\n");
    let found = leaks(&logs, &s.named());
    assert!(
        found.is_empty(),
        "secrets in the output:\n{}",
        found.join("\n")
    );
}

#[test]
fn debug_output_of_the_configuration_shows_no_secret() {
    use clap::Parser as _;
    let s = Secrets::new();
    let store = format!("postgres://webhookd:{}@db.internal/hooks", s.db_password);
    let tenants = format!("acme={},globex={}", s.acme, s.globex);
    let cli = webhookd::cli::Cli::try_parse_from([
        "webhookd",
        "--store",
        &store,
        "--api-token",
        &s.admin,
        "--tenant-token",
        &tenants,
        "--secret-encryption-key",
        &s.key,
        "--webhook-secret",
        &s.implicit,
    ])
    .unwrap();
    let settings = webhookd::Settings::from_args(&cli.serve).unwrap();
    let endpoint =
        webhook_core::Endpoint::new("e", "https://example.com/").with_secret(&s.implicit);
    let mock = MockConfig {
        secret: Some(s.implicit.clone()),
        ..MockConfig::default()
    };
    let shown = [
        format!("{settings:?}"),
        format!("{settings:#?}"),
        format!("{:?}", cli.serve.tenant_tokens),
        format!("{:?}", cli.serve.secret_encryption_key),
        format!("{:?}", settings.secret_encryption_key),
        format!("{endpoint:?}"),
        format!("{mock:?}"),
        format!("{:?}", webhook_sdk::SigningKey::new(s.implicit.as_bytes())),
    ]
    .join("\n");
    assert!(
        shown.contains("acme") && shown.contains("postgres"),
        "{shown}"
    );
    let found = leaks(&shown, &s.named());
    assert!(
        found.is_empty(),
        "secrets in Debug output:\n{}",
        found.join("\n")
    );
}
