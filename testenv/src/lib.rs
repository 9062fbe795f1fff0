//! Throwaway PostgreSQL and Redis servers, started on free ports in temporary
//! directories and removed on drop. Used by `cargo xtask` (the test services of `ci`,
//! `integration` and `bench`) and by `webhook-bench` (the chaos run, which restarts
//! the database mid-run and so must own it).
//!
//! Two configurations ([`Durability`]): [`Durability::Fast`] for tests (nothing is
//! flushed, nothing survives a restart) and [`Durability::Durable`] for chaos runs,
//! where every acknowledged write survives the server process being killed.
//!
//! Standard library only, so that it builds in seconds and adds nothing to the
//! dependency tree.

use std::{
    env,
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Errors are messages for a person.
pub type Result<T = ()> = std::result::Result<T, String>;

/// The environment variable the store tests read for PostgreSQL.
pub const POSTGRES_ENV: &str = "WEBHOOK_TEST_POSTGRES_URL";
/// The environment variable the store tests read for Redis.
pub const REDIS_ENV: &str = "WEBHOOK_TEST_REDIS_URL";

/// How hard a server works to keep what it acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// For tests: no fsync, no persistence; a restart loses data.
    Fast,
    /// For chaos runs: every acknowledged write survives the server *process* being
    /// killed (PostgreSQL `synchronous_commit=on`; Redis `appendonly yes`,
    /// `appendfsync always`). It is not meant to survive an OS crash or power loss.
    Durable,
}

/// A free TCP port on 127.0.0.1 (free when asked; another process may take it later).
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| e.to_string())
}

/// Waits until something accepts connections on 127.0.0.1:`port`.
///
/// # Errors
/// When nothing listens within `timeout`.
pub fn wait_for_port(port: u16, timeout: Duration) -> Result {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "nothing listens on port {port} after {}s",
        timeout.as_secs()
    ))
}

/// A name unique to this process and moment, for temporary directories.
fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{name}-{}-{nanos}", std::process::id())
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

/// A throwaway PostgreSQL cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    root: PathBuf,
    data: PathBuf,
    port: u16,
}

impl Postgres {
    /// Creates a cluster with `initdb` in a temporary directory and starts it on a free
    /// port (trust authentication, user `postgres`).
    ///
    /// # Errors
    /// When the binaries are missing or the server does not start.
    pub fn start(durability: Durability) -> Result<Self> {
        let bin = postgres_bin()?;
        stop_orphans(&bin);
        let port = free_port()?;
        let root = env::temp_dir().join(unique(&format!("webhook-pg-{port}")));
        let data = root.join("data");
        std::fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
        let server = Self {
            bin,
            root,
            data,
            port,
        };
        if is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&server.root)
                .status()
                .map_err(|e| format!("chown: {e}"))?;
            if !status.success() {
                return Err("chown of the PostgreSQL temp dir failed".to_owned());
            }
        }
        let status = as_postgres(&server.bin.join("initdb"))
            .args([
                "--auth=trust",
                "--username=postgres",
                "--encoding=UTF8",
                "-D",
            ])
            .arg(&server.data)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("initdb: {e}"))?;
        if !status.success() {
            return Err("initdb failed".to_owned());
        }
        let settings = match durability {
            Durability::Fast => "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
            // A commit is acknowledged only once its WAL is written to the kernel
            // (`synchronous_commit=on`), so it survives the server processes being
            // killed (`pg_ctl restart -m immediate` runs crash recovery from that WAL).
            // `fsync=off` is acceptable because chaos runs kill processes, never the OS:
            // what was written to the kernel reaches the disk regardless.
            Durability::Durable => "-c fsync=off -c synchronous_commit=on",
        };
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=200 {settings}",
            server.root.display()
        );
        server.pg_ctl(&["start", "-w", "-t", "60", "-o", &options])?;
        wait_for_port(port, Duration::from_secs(30))?;
        Ok(server)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Simulates a crash and a restart: `pg_ctl restart -m immediate` (the server
    /// processes quit without a checkpoint and the new server runs crash recovery),
    /// with the same options and port. Returns once the server accepts connections.
    ///
    /// # Errors
    /// When the server does not come back.
    pub fn restart(&self) -> Result {
        self.pg_ctl(&["restart", "-m", "immediate", "-w", "-t", "60"])?;
        wait_for_port(self.port, Duration::from_secs(30))
    }

    /// Runs `pg_ctl ARGS -l LOG -D DATA` as the `postgres` user.
    fn pg_ctl(&self, args: &[&str]) -> Result {
        let log = self.root.join("log");
        let status = as_postgres(&self.bin.join("pg_ctl"))
            .args(args)
            .arg("-l")
            .arg(&log)
            .arg("-D")
            .arg(&self.data)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("pg_ctl {}: {e}", args[0]))?;
        if status.success() {
            Ok(())
        } else {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            Err(format!("pg_ctl {} failed ({status}):\n{log}", args[0]))
        }
    }
}

/// Stops and deletes the clusters of earlier runs whose process is gone without
/// dropping its [`Postgres`] (interrupted with Ctrl-C, say: `pg_ctl` detaches the
/// server, so it outlives the process that started it). A cluster's directory is named
/// `webhook-pg-PORT-PID-NANOS`; one whose PID is still running is left alone.
fn stop_orphans(bin: &Path) {
    let Ok(entries) = std::fs::read_dir(env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("webhook-pg-") else {
            continue;
        };
        let Some(pid) = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let root = entry.path();
        let _ = as_postgres(&bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(root.join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&root);
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_postgres(&self.bin.join("pg_ctl"))
            .args(["stop", "-m", "immediate", "-D"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A throwaway `redis-server` with its own directory; killed and deleted on drop.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    durability: Durability,
}

impl Redis {
    /// Starts `redis-server` on a free port, in a new temporary directory.
    ///
    /// # Errors
    /// When `redis-server` is missing or does not answer.
    pub fn start(durability: Durability) -> Result<Self> {
        let port = free_port()?;
        let dir = env::temp_dir().join(unique(&format!("webhook-redis-{port}")));
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let mut server = Self {
            child: None,
            port,
            dir,
            durability,
        };
        server.spawn()?;
        Ok(server)
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Simulates a crash and a restart: SIGKILL, then a new server on the same port and
    /// directory (which reloads the append-only file when [`Durability::Durable`]).
    /// Returns once the new server answers `PING` (its data loaded).
    ///
    /// # Errors
    /// When the new server does not start.
    pub fn restart(&mut self) -> Result {
        self.kill();
        self.spawn()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
    }

    fn spawn(&mut self) -> Result {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""])
            .arg("--dir")
            .arg(&self.dir);
        match self.durability {
            Durability::Fast => command.args(["--appendonly", "no"]),
            Durability::Durable => command.args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--maxmemory-policy",
                "noeviction",
            ]),
        };
        let child = command
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (install the redis-server package, or set WEBHOOK_TEST_REDIS_URL): {e}"))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(30))
    }

    /// Waits until the server answers `PING` with `PONG` (not `LOADING`).
    fn wait_ready(&self, timeout: Duration) -> Result {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut reply = [0u8; 64];
                if stream.write_all(b"PING\r\n").is_ok()
                    && let Ok(n) = stream.read(&mut reply)
                    && reply[..n].starts_with(b"+PONG")
                {
                    return Ok(());
                }
            }
            thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "redis-server on port {} did not answer PING within {}s",
            self.port,
            timeout.as_secs()
        ))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PostgreSQL and Redis for the test suites: the URLs in the environment when set,
/// throwaway [`Durability::Fast`] servers otherwise; those are stopped on drop.
#[derive(Debug)]
pub struct Services {
    /// Where PostgreSQL is.
    pub postgres_url: String,
    /// Where Redis is.
    pub redis_url: String,
    /// Held to be stopped on drop.
    _postgres: Option<Postgres>,
    /// Held to be stopped on drop.
    _redis: Option<Redis>,
}

impl Services {
    /// Uses `WEBHOOK_TEST_POSTGRES_URL` (or `DATABASE_URL`) and `WEBHOOK_TEST_REDIS_URL`
    /// (or `REDIS_URL`) when set; starts throwaway servers on free ports otherwise.
    ///
    /// # Errors
    /// When a server that is needed cannot be started.
    pub fn start() -> Result<Self> {
        let (postgres, postgres_url) =
            match env::var(POSTGRES_ENV).or_else(|_| env::var("DATABASE_URL")) {
                Ok(url) => (None, url),
                Err(_) => {
                    let server = Postgres::start(Durability::Fast)?;
                    let url = server.url();
                    (Some(server), url)
                }
            };
        let (redis, redis_url) = match env::var(REDIS_ENV).or_else(|_| env::var("REDIS_URL")) {
            Ok(url) => (None, url),
            Err(_) => {
                let server = Redis::start(Durability::Fast)?;
                let url = server.url();
                (Some(server), url)
            }
        };
        eprintln!("testenv: PostgreSQL at {}", redact(&postgres_url));
        eprintln!("testenv: Redis at {}", redact(&redis_url));
        Ok(Self {
            postgres_url,
            redis_url,
            _postgres: postgres,
            _redis: redis,
        })
    }

    /// The environment for test processes: [`POSTGRES_ENV`] and [`REDIS_ENV`].
    pub fn env(&self) -> [(&'static str, &str); 2] {
        [
            (POSTGRES_ENV, &self.postgres_url),
            (REDIS_ENV, &self.redis_url),
        ]
    }
}

/// `url` with its user and password replaced by `***`.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends one inline command to Redis and returns the raw reply.
    fn redis_command(port: u16, command: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .expect("write");
        let mut reply = [0u8; 256];
        let n = stream.read(&mut reply).expect("read");
        String::from_utf8_lossy(&reply[..n]).into_owned()
    }

    #[test]
    fn durable_redis_keeps_acknowledged_writes_across_a_crash() {
        let mut redis = Redis::start(Durability::Durable).expect("redis-server");
        assert_eq!(redis_command(redis.port, "SET chaos kept"), "+OK\r\n");
        redis.restart().expect("restart");
        assert_eq!(redis_command(redis.port, "GET chaos"), "$4\r\nkept\r\n");
        let dir = redis.dir.clone();
        drop(redis);
        assert!(!dir.exists(), "the directory is removed on drop");
    }

    #[test]
    fn postgres_comes_back_after_a_crash_restart() {
        let postgres = Postgres::start(Durability::Durable).expect("postgres");
        postgres.restart().expect("restart");
        assert!(TcpStream::connect(("127.0.0.1", postgres.port)).is_ok());
        assert!(postgres.url().starts_with("postgres://postgres@127.0.0.1:"));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact("postgres://u:p@127.0.0.1:5432/db"),
            "postgres://***@127.0.0.1:5432/db"
        );
        assert_eq!(redact("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379/");
    }
}
