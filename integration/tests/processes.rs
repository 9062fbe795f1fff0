//! Cross-process guarantees on each durable store:
//! - a dispatcher process SIGKILLed mid-stream loses nothing it acknowledged;
//! - two dispatcher processes sharing one store deliver every event, none twice.

use std::{
    collections::HashSet,
    process::Stdio,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};
use webhook_integration::{CountingReceiver, postgres_url, redis_url};

fn unique(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}_{}_{nanos}", std::process::id())
}

fn spawn(
    spec: &str,
    url: &str,
    prefix: &str,
    count: u64,
) -> (Child, Lines<BufReader<ChildStdout>>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dispatch-child"))
        .args([spec, url, prefix, &count.to_string()])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn dispatch-child");
    let lines = BufReader::new(child.stdout.take().unwrap()).lines();
    (child, lines)
}

async fn wait_delivered(receiver: &CountingReceiver, ids: &HashSet<String>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let counts = receiver.counts();
        let missing = ids.iter().filter(|id| !counts.contains_key(*id)).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged events never arrived"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills a dispatcher after 400 acknowledgements, restarts it, and checks every
/// acknowledged event arrives. Returns (acknowledged, duplicates).
async fn crash_and_recover(spec: &str) -> (usize, usize) {
    let receiver = CountingReceiver::start(Duration::from_millis(2)).await;
    let (mut first, mut lines) = spawn(spec, &receiver.url(), "c", 5_000);
    let mut acked = HashSet::new();
    while acked.len() < 400 {
        let line = lines
            .next_line()
            .await
            .unwrap()
            .expect("child exited early");
        if let Some(id) = line.strip_prefix("ack ") {
            acked.insert(id.to_owned());
        }
    }
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    // Lines written before the kill were acknowledged too.
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(id) = line.strip_prefix("ack ") {
            acked.insert(id.to_owned());
        }
    }
    let (mut second, _lines) = spawn(spec, &receiver.url(), "c", 0);
    wait_delivered(&receiver, &acked, Duration::from_secs(90)).await;
    second.start_kill().unwrap();
    let counts = receiver.counts();
    let duplicates = counts.values().map(|n| n - 1).sum();
    eprintln!(
        "{}: {} acknowledged before SIGKILL, all delivered after restart, {duplicates} duplicates",
        spec.split(':').next().unwrap(),
        acked.len()
    );
    (acked.len(), duplicates)
}

/// Two dispatchers on one store, 500 events each: all delivered exactly once.
async fn two_processes(spec: &str) {
    let receiver = CountingReceiver::start(Duration::ZERO).await;
    let (mut a, mut a_lines) = spawn(spec, &receiver.url(), "a", 500);
    let (mut b, mut b_lines) = spawn(spec, &receiver.url(), "b", 500);
    let mut ids = HashSet::new();
    for lines in [&mut a_lines, &mut b_lines] {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "done" {
                break;
            }
            ids.insert(line.strip_prefix("ack ").unwrap().to_owned());
        }
    }
    assert_eq!(ids.len(), 1000);
    wait_delivered(&receiver, &ids, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.start_kill().unwrap();
    b.start_kill().unwrap();
    let twice: Vec<_> = receiver
        .counts()
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(
        twice.is_empty(),
        "delivered more than once without a crash: {twice:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redb_crash_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("redb:{}", dir.path().join("webhooks.redb").display());
    let (acked, _) = crash_and_recover(&spec).await;
    assert!(acked >= 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_crash_loses_nothing() {
    let spec = format!("postgres:{}#{}", postgres_url(), unique("crash"));
    let (acked, _) = crash_and_recover(&spec).await;
    assert!(acked >= 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_crash_loses_nothing() {
    let spec = format!("redis:{}#{}", redis_url(), unique("crash"));
    let (acked, _) = crash_and_recover(&spec).await;
    assert!(acked >= 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_two_processes_share_the_work() {
    two_processes(&format!("postgres:{}#{}", postgres_url(), unique("two"))).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_two_processes_share_the_work() {
    two_processes(&format!("redis:{}#{}", redis_url(), unique("two"))).await;
}
