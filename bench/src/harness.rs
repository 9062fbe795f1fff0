//! What the chaos and soak runs share: the store behind webhookd (and the throwaway
//! database server it may need), the webhookd and mock-receiver processes, and a small
//! HTTP client for the API.

use std::{
    collections::HashMap,
    ffi::OsString,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use webhook_testenv::{Durability, Postgres, Redis};

/// The signing secret of the implicit endpoint, checked by the mock receiver.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The HTTP client used against the API.
pub(crate) type HttpClient =
    Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A new client.
pub(crate) fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The webhookd binary: `$WEBHOOKD_BIN`, set by `cargo xtask`.
pub(crate) fn webhookd_bin() -> String {
    std::env::var("WEBHOOKD_BIN").unwrap_or_else(|_| "target/release/webhookd".to_owned())
}

/// A name unique to this run, usable as a PostgreSQL schema and a Redis key prefix.
fn namespace(tool: &str) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("{tool}_{}_{secs}", std::process::id())
}

/// Calls `set(flag, value)` for each `--flag value` pair of `args`.
pub(crate) fn parse_flags(
    args: &[String],
    mut set: impl FnMut(&str, &str) -> Result<(), String>,
) -> Result<(), String> {
    let mut args = args.iter();
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        set(flag, value)?;
    }
    Ok(())
}

/// Which store webhookd runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StoreKind {
    /// The embedded redb file.
    Redb,
    /// PostgreSQL (a throwaway server).
    Postgres,
    /// Redis (a throwaway server).
    Redis,
}

impl StoreKind {
    /// Parses `redb`, `postgres` or `redis`.
    pub(crate) fn parse(name: &str) -> Result<Self, String> {
        match name {
            "redb" => Ok(Self::Redb),
            "postgres" => Ok(Self::Postgres),
            "redis" => Ok(Self::Redis),
            other => Err(format!("--store {other}: one of redb, postgres, redis")),
        }
    }

    /// The name, as on the command line.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Redb => "redb",
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        }
    }
}

/// The store behind webhookd, and the throwaway database server it runs on (owned
/// here, so that a run can crash-restart it). Stopped and deleted on drop.
pub(crate) struct Database {
    server: Server,
    /// webhookd's `--data-dir` (redb) or a scratch directory; removed on drop.
    dir: PathBuf,
    namespace: String,
}

enum Server {
    Embedded,
    Postgres(Postgres),
    Redis(Redis),
}

impl Database {
    /// A fresh store of `kind` for a run of `tool`: a new directory for redb, a new
    /// durable server (and a namespace of its own) for PostgreSQL and Redis.
    pub(crate) fn start(kind: StoreKind, tool: &str) -> Result<Self, String> {
        let namespace = namespace(tool);
        let dir = std::env::temp_dir().join(format!("webhook-{namespace}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let server = match kind {
            StoreKind::Redb => Server::Embedded,
            StoreKind::Postgres => Server::Postgres(Postgres::start(Durability::Durable)?),
            StoreKind::Redis => Server::Redis(Redis::start(Durability::Durable)?),
        };
        Ok(Self {
            server,
            dir,
            namespace,
        })
    }

    /// Whether there is a database server to restart.
    pub(crate) fn has_server(&self) -> bool {
        !matches!(self.server, Server::Embedded)
    }

    /// Bytes of the store's files in its directory (the redb file); 0 for a
    /// database server, whose data lives in another process.
    pub(crate) fn local_bytes(&self) -> u64 {
        if self.has_server() {
            return 0;
        }
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .filter(std::fs::Metadata::is_file)
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// webhookd's flags that select this store.
    fn webhookd_args(&self) -> Vec<OsString> {
        let url = match &self.server {
            Server::Embedded => return vec!["--data-dir".into(), self.dir.clone().into()],
            Server::Postgres(pg) => pg.url(),
            Server::Redis(redis) => redis.url(),
        };
        vec![
            "--store".into(),
            url.into(),
            "--store-namespace".into(),
            self.namespace.clone().into(),
        ]
    }

    /// Crash-restarts the database server (PostgreSQL: `pg_ctl restart -m immediate`;
    /// Redis: SIGKILL and start again); returns how long it was unavailable.
    pub(crate) fn restart(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        // Blocking (pg_ctl waits for the server), on a worker that may block.
        tokio::task::block_in_place(|| match &mut self.server {
            Server::Embedded => Err("the embedded store has no server to restart".to_owned()),
            Server::Postgres(pg) => pg.restart(),
            Server::Redis(redis) => redis.restart(),
        })?;
        Ok(started.elapsed())
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `webhookd mock-receiver`: answers with failures and hangs at the given rates and
/// counts the successful requests per `webhook-id` (the event id) from its log lines.
pub(crate) struct Mock {
    _child: Child,
    /// The URL deliveries go to.
    pub(crate) url: String,
    ok: Arc<Mutex<HashMap<String, u64>>>,
}

impl Mock {
    /// Starts the receiver and waits until it listens.
    pub(crate) fn start(bin: &str, failure_rate: f64, hang_rate: f64) -> Result<Self, String> {
        let port = webhook_testenv::free_port()?;
        let mut child = Command::new(bin)
            .args(["mock-receiver", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--failure-rate", &failure_rate.to_string()])
            .args(["--hang-rate", &hang_rate.to_string()])
            .args(["--max-delay", "0.2", "--secret", SECRET])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {bin} mock-receiver: {e}"))?;
        let ok: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let mut lines = BufReader::new(child.stdout.take().ok_or("no mock stdout")?).lines();
        let counts = Arc::clone(&ok);
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
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(id.to_owned())
                        .or_default() += 1;
                }
            }
        });
        tokio::task::block_in_place(|| {
            webhook_testenv::wait_for_port(port, Duration::from_secs(30))
        })?;
        Ok(Self {
            _child: child,
            url: format!("http://127.0.0.1:{port}/webhook"),
            ok,
        })
    }

    /// How many distinct events were answered 200.
    pub(crate) fn delivered(&self) -> usize {
        self.ok.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Successful requests per event id.
    pub(crate) fn ok_counts(&self) -> HashMap<String, u64> {
        self.ok
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A webhookd process on a fixed port that can be killed and started again with the
/// same settings; its logs are appended to one file.
pub(crate) struct Webhookd {
    bin: String,
    port: u16,
    args: Vec<OsString>,
    target: String,
    log: std::fs::File,
    child: Option<Child>,
}

impl Webhookd {
    /// webhookd on `database`, delivering to `target`, logging to
    /// `$TMPDIR/webhook-<tool>-webhookd.log`. Not started yet.
    pub(crate) fn new(
        bin: &str,
        database: &Database,
        target: &str,
        tool: &str,
    ) -> Result<Self, String> {
        let log_path = std::env::temp_dir().join(format!("webhook-{tool}-webhookd.log"));
        let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        eprintln!("webhookd logs: {}", log_path.display());
        Ok(Self {
            bin: bin.to_owned(),
            port: webhook_testenv::free_port()?,
            args: database.webhookd_args(),
            target: target.to_owned(),
            log,
            child: None,
        })
    }

    /// The API's base URL.
    pub(crate) fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The process id, while running.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Starts the process and waits until `/healthz` answers.
    pub(crate) async fn start(&mut self, client: &HttpClient) -> Result<(), String> {
        let child = Command::new(&self.bin)
            .args([
                "--listen",
                &format!("127.0.0.1:{}", self.port),
                "--allow-private-destinations",
            ])
            // With many requests failing, the default breaker (open 60 s after 5
            // failures in a row) would make the run mostly waiting; keep it short.
            .args([
                "--circuit-breaker-threshold",
                "20",
                "--circuit-breaker-open-timeout",
                "1",
            ])
            .args(&self.args)
            .env("WEBHOOK_SECRET", SECRET)
            .env("TARGET_URL", &self.target)
            .env("BACKOFF_BASE_SECONDS", "1")
            .env("MAX_ATTEMPTS", "40")
            .env("HTTP_TIMEOUT", "1")
            .env("WORKER_POLL_INTERVAL", "0.2")
            .stdout(Stdio::null())
            .stderr(self.log.try_clone().map_err(|e| e.to_string())?)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin))?;
        self.child = Some(child);
        wait_healthy(client, &self.api()).await
    }

    /// SIGKILL, and waits for the process to be gone.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// The exit status if the process ended on its own.
    pub(crate) fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }
}

/// Builds a request without a body.
fn get_request(url: &str) -> Option<http::Request<Full<Bytes>>> {
    http::Request::get(url).body(Full::new(Bytes::new())).ok()
}

/// One request with a 5 s limit: the status and body, `None` on any failure.
async fn send(client: &HttpClient, request: http::Request<Full<Bytes>>) -> Option<(u16, Bytes)> {
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .ok()?
        .ok()?;
    let status = response.status().as_u16();
    let body = tokio::time::timeout(Duration::from_secs(5), response.into_body().collect())
        .await
        .ok()?
        .ok()?
        .to_bytes();
    Some((status, body))
}

/// `POST /events` with an explicit id until it answers 202 (ids make it idempotent,
/// so a retry after a lost answer is safe), for at most `give_up`. Whether it was
/// accepted.
pub(crate) async fn send_event(
    client: &HttpClient,
    api: &str,
    id: &str,
    payload: &str,
    give_up: Duration,
) -> bool {
    let body = format!(r#"{{"id":"{id}","payload":{payload}}}"#);
    let deadline = Instant::now() + give_up;
    loop {
        let request = http::Request::post(format!("{api}/events"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.clone())));
        if let Ok(request) = request
            && send(client, request).await.is_some_and(|(s, _)| s == 202)
        {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What `GET /events/{id}` says about an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// The event's status (`pending`, `delivered`, `dead`, ...).
    Status(String),
    /// 404: the service does not know the event.
    Missing,
    /// No answer (or not one that can be read).
    Unreachable,
}

/// Looks an event up.
pub(crate) async fn lookup(client: &HttpClient, api: &str, id: &str) -> Lookup {
    let Some(request) = get_request(&format!("{api}/events/{id}")) else {
        return Lookup::Unreachable;
    };
    match send(client, request).await {
        Some((404, _)) => Lookup::Missing,
        Some((200, body)) => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v["status"].as_str().map(|s| Lookup::Status(s.to_owned())))
            .unwrap_or(Lookup::Unreachable),
        _ => Lookup::Unreachable,
    }
}

/// The body of `GET /events/{id}`, for a look at an event that did not finish.
pub(crate) async fn describe(client: &HttpClient, api: &str, id: &str) -> String {
    let answer = match get_request(&format!("{api}/events/{id}")) {
        Some(request) => send(client, request).await,
        None => None,
    };
    answer.map_or_else(
        || "(no answer)".to_owned(),
        |(_, body)| String::from_utf8_lossy(&body).into_owned(),
    )
}

/// Waits up to 30 s for `GET /healthz` to answer 200.
async fn wait_healthy(client: &HttpClient, api: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let request = get_request(&format!("{api}/healthz")).ok_or("bad healthz request")?;
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

/// Classifies `ids` by their final state through the API, retrying for up to `limit`
/// while some are unfinished: returns the status of each id that reached `delivered`
/// or `dead`, and of the others the last answer.
pub(crate) async fn await_final(
    client: &HttpClient,
    api: &str,
    ids: &[String],
    limit: Duration,
) -> HashMap<String, Lookup> {
    let deadline = Instant::now() + limit;
    let mut states: HashMap<String, Lookup> = HashMap::new();
    let is_final = |l: Option<&Lookup>| matches!(l, Some(Lookup::Status(s)) if s == "delivered" || s == "dead");
    loop {
        for id in ids {
            if !is_final(states.get(id)) {
                states.insert(id.clone(), lookup(client, api, id).await);
            }
        }
        let done = ids.iter().all(|id| is_final(states.get(id)));
        if done || Instant::now() >= deadline {
            return states;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Counts of final states: (delivered, dead, missing (lost), unfinished).
pub(crate) fn tally(states: &HashMap<String, Lookup>) -> (usize, usize, usize, usize) {
    let (mut delivered, mut dead, mut missing, mut other) = (0, 0, 0, 0);
    for state in states.values() {
        match state {
            Lookup::Status(s) if s == "delivered" => delivered += 1,
            Lookup::Status(s) if s == "dead" => dead += 1,
            Lookup::Missing => missing += 1,
            _ => other += 1,
        }
    }
    (delivered, dead, missing, other)
}

/// Requests beyond the first per event that the receiver answered 200.
pub(crate) fn duplicates(ok: &HashMap<String, u64>) -> u64 {
    ok.values().map(|n| n.saturating_sub(1)).sum()
}
