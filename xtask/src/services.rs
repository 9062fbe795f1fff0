//! Throwaway PostgreSQL and Redis servers for the tests, started when no URL is given.

use std::{
    env,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::Result;

/// The environment variables the store tests read.
pub(crate) const POSTGRES_ENV: &str = "WEBHOOK_TEST_POSTGRES_URL";
pub(crate) const REDIS_ENV: &str = "WEBHOOK_TEST_REDIS_URL";

/// Running test services; stopped on drop.
pub(crate) struct Services {
    pub(crate) postgres_url: String,
    pub(crate) redis_url: String,
    postgres: Option<Postgres>,
    redis: Option<Child>,
}

struct Postgres {
    bin: PathBuf,
    data: PathBuf,
}

impl Services {
    /// Uses `WEBHOOK_TEST_POSTGRES_URL` (or `DATABASE_URL`) and `WEBHOOK_TEST_REDIS_URL`
    /// (or `REDIS_URL`) when set; starts throwaway servers on free ports otherwise.
    pub(crate) fn start() -> Result<Self> {
        let mut services = Self {
            postgres_url: String::new(),
            redis_url: String::new(),
            postgres: None,
            redis: None,
        };
        match env::var(POSTGRES_ENV).or_else(|_| env::var("DATABASE_URL")) {
            Ok(url) => services.postgres_url = url,
            Err(_) => {
                let (postgres, url) = start_postgres()?;
                services.postgres = Some(postgres);
                services.postgres_url = url;
            }
        }
        match env::var(REDIS_ENV).or_else(|_| env::var("REDIS_URL")) {
            Ok(url) => services.redis_url = url,
            Err(_) => {
                let (child, url) = start_redis()?;
                services.redis = Some(child);
                services.redis_url = url;
            }
        }
        eprintln!("xtask: PostgreSQL at {}", redact(&services.postgres_url));
        eprintln!("xtask: Redis at {}", redact(&services.redis_url));
        Ok(services)
    }

    /// The environment for test processes.
    pub(crate) fn env(&self) -> [(&'static str, &str); 2] {
        [
            (POSTGRES_ENV, &self.postgres_url),
            (REDIS_ENV, &self.redis_url),
        ]
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        if let Some(mut redis) = self.redis.take() {
            let _ = redis.kill();
            let _ = redis.wait();
        }
        if let Some(pg) = self.postgres.take() {
            let _ = as_postgres(&pg.bin.join("pg_ctl"))
                .args(["stop", "-m", "immediate", "-D"])
                .arg(&pg.data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if let Some(parent) = pg.data.parent() {
                let _ = std::fs::remove_dir_all(parent);
            }
        }
    }
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs a PostgreSQL binary as the `postgres` user when we are root (initdb refuses root).
fn as_postgres(bin: &Path) -> Command {
    if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(bin);
        command
    } else {
        Command::new(bin)
    }
}

fn postgres_bin() -> Result<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| dir.flatten().map(|e| e.path().join("bin")).collect())
        .unwrap_or_default();
    candidates.sort();
    candidates
        .into_iter()
        .rev()
        .find(|bin| bin.join("initdb").exists())
        .ok_or_else(|| "PostgreSQL binaries (initdb) not found: install the postgresql package, or set WEBHOOK_TEST_POSTGRES_URL".to_owned())
}

fn start_postgres() -> Result<(Postgres, String)> {
    let bin = postgres_bin()?;
    let port = free_port()?;
    let root = env::temp_dir().join(format!("webhook-test-pg-{}-{port}", std::process::id()));
    let data = root.join("data");
    std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&root)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err("chown of the PostgreSQL temp dir failed".to_owned());
        }
    }
    let status = as_postgres(&bin.join("initdb"))
        .args([
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "-D",
        ])
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("initdb: {e}"))?;
    if !status.success() {
        return Err("initdb failed".to_owned());
    }
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
        root.display()
    );
    let status = as_postgres(&bin.join("pg_ctl"))
        .args(["start", "-w", "-t", "60", "-o", &options, "-l"])
        .arg(root.join("log"))
        .arg("-D")
        .arg(&data)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("pg_ctl start: {e}"))?;
    if !status.success() {
        let log = std::fs::read_to_string(root.join("log")).unwrap_or_default();
        return Err(format!("PostgreSQL did not start:\n{log}"));
    }
    wait_for_port(port)?;
    Ok((
        Postgres { bin, data },
        format!("postgres://postgres@127.0.0.1:{port}/postgres"),
    ))
}

fn start_redis() -> Result<(Child, String)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start redis-server (install the redis-server package, or set WEBHOOK_TEST_REDIS_URL): {e}"))?;
    wait_for_port(port)?;
    Ok((child, format!("redis://127.0.0.1:{port}/")))
}

fn wait_for_port(port: u16) -> Result {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!("nothing listens on port {port} after 30s"))
}
