//! A Redis restart: calls fail fast with `Unavailable` while it is down, and succeed
//! again, with the data, once it is back (append-only file). A server that stops
//! being the primary: the store lets go of its connection.

mod support;

use std::{
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use webhook_core::{ClaimRequest, Endpoint, Error, Event, Store, testkit::t};
use webhook_store_redis::{RedisOptions, RedisStore, deadpool_redis::redis};

/// A throwaway `redis-server`, killed (and its directory removed) on drop, even when
/// the test fails.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Server {
    fn new() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(support::fresh_prefix("redis-restart").replace(':', "-"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut server = Self {
            child: None,
            port,
            dir,
        };
        server.start();
        server
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn start(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "yes"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        self.child = Some(child);
        wait_ready(&self.url(), &self.dir);
    }

    /// Stops the server with SIGTERM (a clean shutdown) and waits for it to exit.
    fn terminate(&mut self) {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -TERM failed");
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("redis-server did not stop on SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Server {
    /// Sends `signal` (`STOP`, `CONT`) to the running server.
    fn signal(&self, signal: &str) {
        let child = self.child.as_ref().expect("running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} failed");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A stopped process still dies of SIGKILL.
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until the server answers PING (not LOADING).
fn wait_ready(url: &str, dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ping = redis::Client::open(url).and_then(|client| {
            let mut conn = client.get_connection_with_timeout(Duration::from_millis(200))?;
            redis::cmd("PING").query::<String>(&mut conn)
        });
        match ping {
            Ok(_) => return,
            Err(e) if Instant::now() > deadline => {
                panic!("redis-server in {} not ready: {e}", dir.display())
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

const BOUND: Duration = Duration::from_secs(8);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_fail_fast_while_redis_is_down_and_recover_after_a_restart() {
    let mut server = Server::new();
    let options = RedisOptions::default()
        .with_connect_timeout(Duration::from_secs(1))
        .with_wait_timeout(Duration::from_secs(2))
        .with_command_timeout(Duration::from_secs(2));
    let store = RedisStore::connect_with(&server.url(), "restart", &options)
        .await
        .expect("connect");
    store
        .put_endpoint(&Endpoint::new("x", "https://example.test/hook"))
        .await
        .unwrap();
    store
        .enqueue(&Event::new("e1", "payload one"), &["x".into()], t(0))
        .await
        .unwrap();

    server.terminate();

    for attempt in 0..3 {
        let started = Instant::now();
        let result = tokio::time::timeout(
            BOUND,
            store.claim(&ClaimRequest::new(t(1), Duration::from_secs(30), 10)),
        )
        .await
        .unwrap_or_else(|_| panic!("claim {attempt} hung while Redis was down"));
        match result {
            Err(Error::Unavailable(message)) => {
                eprintln!("down, after {:?}: {message}", started.elapsed());
            }
            other => panic!("claim {attempt} while Redis is down: {other:?}"),
        }
    }
    let enqueue = tokio::time::timeout(
        BOUND,
        store.enqueue(&Event::new("e2", "x"), &["x".into()], t(1)),
    )
    .await
    .expect("enqueue hung while Redis was down");
    assert!(
        matches!(enqueue, Err(Error::Unavailable(_))),
        "enqueue while down: {enqueue:?}"
    );

    server.start();

    let record = tokio::time::timeout(BOUND, store.get_event(None, &"e1".into()))
        .await
        .expect("get_event hung after the restart")
        .expect("get_event succeeds once Redis is back")
        .expect("the enqueued event survived the restart (appendonly)");
    assert_eq!(&record.event.payload[..], b"payload one");
    assert_eq!(record.deliveries.len(), 1);
    // The claim script is no longer cached by the new server: NOSCRIPT is handled.
    let claimed = tokio::time::timeout(
        BOUND,
        store.claim(&ClaimRequest::new(t(2), Duration::from_secs(30), 10)),
    )
    .await
    .expect("claim hung after the restart")
    .expect("claim succeeds once Redis is back");
    assert_eq!(claimed.len(), 1);
    assert_eq!(&claimed[0].event.payload[..], b"payload one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_time_out_while_redis_does_not_answer() {
    let server = Server::new();
    let options = RedisOptions::default()
        .with_connect_timeout(Duration::from_secs(1))
        .with_wait_timeout(Duration::from_secs(1))
        .with_command_timeout(Duration::from_secs(1));
    let store = RedisStore::connect_with(&server.url(), "frozen", &options)
        .await
        .expect("connect");
    store
        .put_endpoint(&Endpoint::new("x", "https://example.test/hook"))
        .await
        .unwrap();
    store
        .enqueue(&Event::new("e1", "p"), &["x".into()], t(0))
        .await
        .unwrap();

    // The kernel still accepts connections, but nothing answers.
    server.signal("STOP");
    let started = Instant::now();
    let result = tokio::time::timeout(
        BOUND,
        store.claim(&ClaimRequest::new(t(1), Duration::from_secs(30), 10)),
    )
    .await
    .expect("claim hung while Redis did not answer");
    assert!(
        matches!(result, Err(Error::Unavailable(_))),
        "claim while Redis is frozen: {result:?}"
    );
    eprintln!("frozen, failed after {:?}: {result:?}", started.elapsed());
    server.signal("CONT");

    let mut claimed = None;
    let deadline = Instant::now() + BOUND;
    while claimed.is_none() {
        // The frozen server may still be answering the timed-out calls: retry briefly.
        match store
            .claim(&ClaimRequest::new(t(1), Duration::from_secs(30), 10))
            .await
        {
            Ok(c) => claimed = Some(c),
            Err(e) if Instant::now() < deadline => {
                eprintln!("after CONT: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("no recovery after SIGCONT: {e}"),
        }
    }
    // The timed-out claim may have been applied (its lease then holds the delivery).
    let claimed = claimed.unwrap();
    assert!(claimed.len() <= 1);
}

/// Client connections to `server` other than the one asking (named `probe`) and the
/// link from its primary when it is a replica (flag `M`).
fn store_connections(server: &Server) -> usize {
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_connection().expect("probe connection");
    redis::cmd("CLIENT")
        .arg("SETNAME")
        .arg("probe")
        .query::<()>(&mut conn)
        .expect("name the probe");
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query(&mut conn)
        .expect("client list");
    list.lines()
        .filter(|l| !l.contains("name=probe") && !l.contains(" flags=M "))
        .count()
}

fn command(server: &Server, args: &[&str]) {
    let client = redis::Client::open(server.url()).expect("client");
    let mut conn = client.get_connection().expect("connection");
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query::<()>(&mut conn).expect("command");
}

/// After a failover behind one DNS name, the name leads to the new primary while the
/// store's open connection still reaches the old one, now a read-only replica: the
/// store closes that connection (a health check would pass it) so that its next
/// connection reaches the primary. Here the server the store uses turns replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_to_a_server_turned_replica_is_closed() {
    let old_primary = Server::new();
    let new_primary = Server::new();
    let store = RedisStore::connect(&old_primary.url(), "failover")
        .await
        .expect("connect");
    store
        .put_endpoint(&Endpoint::new("x", "https://example.test/hook"))
        .await
        .unwrap();
    assert!(
        store_connections(&old_primary) > 0,
        "the store's connections"
    );

    command(
        &old_primary,
        &["REPLICAOF", "127.0.0.1", &new_primary.port.to_string()],
    );
    // Enough calls to meet each of the store's connections.
    for _ in 0..8 {
        let refused = store
            .put_endpoint(&Endpoint::new("y", "https://example.test/hook"))
            .await;
        assert!(
            matches!(refused, Err(Error::Unavailable(_))),
            "a write to a replica: {refused:?}"
        );
    }
    let deadline = Instant::now() + BOUND;
    while store_connections(&old_primary) > 0 {
        assert!(
            Instant::now() < deadline,
            "the connection to the replica is still open"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Writable again (as the new primary would be): the next call connects anew.
    command(&old_primary, &["REPLICAOF", "NO", "ONE"]);
    store
        .put_endpoint(&Endpoint::new("y", "https://example.test/hook"))
        .await
        .expect("a new connection");
}
