//! `cargo xtask chaos [--events N] [--kills K]`: webhookd on its embedded store and the
//! chaotic mock receiver (failures and hangs on), N events sent through the API, the
//! webhookd process SIGKILLed K times at random moments and restarted. Ends when every
//! accepted event is delivered or dead-lettered (or after a time limit), and writes
//! `target/chaos/report.json`: accepted, delivered, dead, lost (must be 0), undrained
//! (still pending at the time limit), duplicates, seconds to drain.

use std::{
    collections::{HashMap, HashSet},
    net::TcpListener,
    path::PathBuf,
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const DRAIN_LIMIT: Duration = Duration::from_secs(240);

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

struct Options {
    events: u64,
    kills: u32,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        events: 1000,
        kills: 3,
    };
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--events" => options.events = value.parse().map_err(|e| format!("--events: {e}"))?,
            "--kills" => options.kills = value.parse().map_err(|e| format!("--kills: {e}"))?,
            "--store" if value == "redb" => {}
            "--store" => return Err(format!("--store {value}: only redb is supported so far")),
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(options)
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

pub(crate) async fn run(args: &[String]) -> Result<(), String> {
    let options = options(args)?;
    let bin =
        std::env::var("WEBHOOKD_BIN").unwrap_or_else(|_| "target/release/webhookd".to_owned());
    let data = std::env::temp_dir().join(format!("webhook-chaos-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let (mock_port, api_port) = (free_port()?, free_port()?);
    let api = format!("http://127.0.0.1:{api_port}");

    // The mock receiver: 50% failures, 5% hangs; one JSON line per request.
    let mut mock = Command::new(&bin)
        .args([
            "mock-receiver",
            "--listen",
            &format!("127.0.0.1:{mock_port}"),
        ])
        .args([
            "--failure-rate",
            "0.5",
            "--hang-rate",
            "0.05",
            "--max-delay",
            "0.2",
            "--secret",
            SECRET,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {bin} mock-receiver: {e}"))?;
    let delivered_ok: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut lines = BufReader::new(mock.stdout.take().ok_or("no mock stdout")?).lines();
    let counts = delivered_ok.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if value["outcome"] == "ok"
                && let Some(id) = value["webhook_id"].as_str()
            {
                *counts
                    .lock()
                    .expect("counts")
                    .entry(id.to_owned())
                    .or_default() += 1;
            }
        }
    });

    // webhookd's logs, kept for a look when something goes wrong.
    let log_path = std::env::temp_dir().join("webhook-chaos-webhookd.log");
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    eprintln!("webhookd logs: {}", log_path.display());
    let start_server = || -> Result<Child, String> {
        Command::new(&bin)
            .args([
                "--listen",
                &format!("127.0.0.1:{api_port}"),
                "--allow-private-destinations",
            ])
            // With half the requests failing, the default breaker (open 60 s after 5
            // failures in a row) would make the run mostly waiting; keep it short.
            .args([
                "--circuit-breaker-threshold",
                "20",
                "--circuit-breaker-open-timeout",
                "1",
            ])
            .arg("--data-dir")
            .arg(&data)
            .env("WEBHOOK_SECRET", SECRET)
            .env(
                "TARGET_URL",
                format!("http://127.0.0.1:{mock_port}/webhook"),
            )
            .env("BACKOFF_BASE_SECONDS", "1")
            .env("MAX_ATTEMPTS", "40")
            .env("HTTP_TIMEOUT", "1")
            .env("WORKER_POLL_INTERVAL", "0.2")
            .stdout(Stdio::null())
            .stderr(log.try_clone().map_err(|e| e.to_string())?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {bin}: {e}"))
    };
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let mut server = start_server()?;
    wait_healthy(&client, &api).await?;

    // Send every event (retrying across kills: ids make it idempotent) while a killer
    // SIGKILLs and restarts webhookd at random moments.
    let accepted: Arc<Mutex<HashSet<String>>> = Arc::default();
    let sender = {
        let (client, api, accepted) = (client.clone(), api.clone(), accepted.clone());
        let events = options.events;
        tokio::spawn(async move {
            let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let workers: Vec<_> = (0..16)
                .map(|_| {
                    let (client, api, accepted, next) =
                        (client.clone(), api.clone(), accepted.clone(), next.clone());
                    tokio::spawn(async move {
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            if i >= events {
                                return;
                            }
                            let id = format!("chaos-{i}");
                            let body = format!(r#"{{"id":"{id}","payload":{{"n":{i}}}}}"#);
                            while post(&client, &format!("{api}/events"), &body).await != Some(202)
                            {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            accepted.lock().expect("accepted").insert(id);
                        }
                    })
                })
                .collect();
            for w in workers {
                let _ = w.await;
            }
        })
    };
    let started = Instant::now();
    for _ in 0..options.kills {
        let pause = Duration::from_millis(200 + rand::random::<u64>() % 1500);
        tokio::time::sleep(pause).await;
        server.start_kill().map_err(|e| e.to_string())?; // SIGKILL
        let _ = server.wait().await;
        server = start_server()?;
        wait_healthy(&client, &api).await?;
    }
    sender.await.map_err(|e| e.to_string())?;

    // Drain: every accepted event delivered or dead.
    let ids: Vec<String> = accepted.lock().expect("accepted").iter().cloned().collect();
    let mut finals: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + DRAIN_LIMIT;
    while finals.len() < ids.len() && Instant::now() < deadline {
        for id in &ids {
            if finals.contains_key(id) {
                continue;
            }
            if let Some(status) = event_status(&client, &format!("{api}/events/{id}")).await
                && (status == "delivered" || status == "dead")
            {
                finals.insert(id.clone(), status);
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let drain_secs = started.elapsed().as_secs_f64();
    let delivered = finals.values().filter(|s| *s == "delivered").count();
    let dead = finals.values().filter(|s| *s == "dead").count();
    let ok = delivered_ok.lock().expect("counts").clone();
    let duplicates: u64 = ok.values().map(|n| n.saturating_sub(1)).sum();
    // An accepted event the service no longer knows is lost; one still pending when the
    // time limit ran out is undrained (slow, not lost).
    let mut lost = 0;
    for id in ids.iter().filter(|id| !finals.contains_key(*id)) {
        if event_status(&client, &format!("{api}/events/{id}"))
            .await
            .is_none()
        {
            lost += 1;
        }
    }
    let undrained = ids.len() - finals.len() - lost;
    for id in ids.iter().filter(|id| !finals.contains_key(*id)).take(3) {
        let request = http::Request::get(format!("{api}/events/{id}"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        if let Ok(response) = client.request(request).await {
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            eprintln!("undrained {id}: {}", String::from_utf8_lossy(&body));
        }
    }
    let report = serde_json::json!({
        "store": "redb",
        "events": options.events,
        "kills": options.kills,
        "accepted": ids.len(),
        "delivered": delivered,
        "dead": dead,
        "lost": lost,
        "undrained": undrained,
        "duplicates": duplicates,
        "time_to_drain_secs": drain_secs,
    });
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    let dir =
        PathBuf::from(std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned()))
            .join("chaos");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_vec_pretty(&report).unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;
    server.start_kill().ok();
    mock.start_kill().ok();
    let _ = std::fs::remove_dir_all(&data);
    if lost > 0 {
        return Err(format!(
            "{lost} accepted events were neither delivered nor dead-lettered"
        ));
    }
    Ok(())
}

async fn post(client: &HttpClient, url: &str, body: &str) -> Option<u16> {
    let request = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let _ = response.into_body().collect().await;
    Some(status)
}

async fn event_status(client: &HttpClient, url: &str) -> Option<String> {
    let request = http::Request::get(url).body(Full::new(Bytes::new())).ok()?;
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .ok()?
        .ok()?;
    let body = response.into_body().collect().await.ok()?.to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
    value["status"].as_str().map(str::to_owned)
}

async fn wait_healthy(client: &HttpClient, api: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let request = http::Request::get(format!("{api}/healthz"))
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        if let Ok(Ok(response)) =
            tokio::time::timeout(Duration::from_secs(2), client.request(request)).await
            && response.status() == 200
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("webhookd did not become healthy within 30s".to_owned())
}
