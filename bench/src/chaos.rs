//! `cargo xtask chaos [--store redb|postgres|redis] [--events N] [--kills K]`: webhookd
//! on that store and the chaotic mock receiver (failures and hangs on); N events sent
//! through the API by 16 concurrent clients that retry every non-202 answer; webhookd
//! SIGKILLed K times at random moments and restarted; for PostgreSQL and Redis the
//! (throwaway, durable) database server is also crash-restarted once, at a random
//! moment while events are still being sent or delivered.
//!
//! The moments are random points of progress (events accepted plus events delivered,
//! out of 2N, between 5 % and 90 %), so every disruption lands while work is
//! outstanding, whatever the speed of the machine. The run ends when every accepted
//! event is delivered or dead-lettered (or after a time limit), and writes
//! `target/chaos/report.json`: accepted, delivered, dead, lost (must be 0), undrained
//! (still unfinished at the time limit), duplicates (requests the receiver answered
//! 200 beyond the first per event), seconds to drain, and each disruption with how
//! many events were outstanding when it happened.

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use rand::{Rng, seq::SliceRandom};

use crate::harness::{
    Database, HttpClient, Lookup, Mock, StoreKind, Webhookd, await_final, client, describe,
    duplicates, parse_flags, send_event, tally, webhookd_bin,
};

/// Longest wait for every accepted event to be delivered or dead.
const DRAIN_LIMIT: Duration = Duration::from_secs(240);
/// A disruption whose progress point is not reached this long after the previous one
/// happens anyway (progress stalled: that is what the drain check will report).
const STALL_LIMIT: Duration = Duration::from_secs(30);
/// Concurrent API clients.
const SENDERS: usize = 16;

struct Options {
    store: StoreKind,
    events: u64,
    kills: u32,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        store: StoreKind::Redb,
        events: 1000,
        kills: 3,
    };
    parse_flags(args, |flag, value| {
        match flag {
            "--events" => options.events = value.parse().map_err(|e| format!("--events: {e}"))?,
            "--kills" => options.kills = value.parse().map_err(|e| format!("--kills: {e}"))?,
            "--store" => options.store = StoreKind::parse(value)?,
            other => return Err(format!("unknown flag {other}")),
        }
        Ok(())
    })?;
    if options.events == 0 {
        return Err("--events must be at least 1".to_owned());
    }
    Ok(options)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disruption {
    /// SIGKILL webhookd and start it again.
    Kill,
    /// Crash-restart the database server.
    DatabaseRestart,
}

/// What happened at one disruption, for the report.
struct Happened {
    what: Disruption,
    at: Duration,
    accepted: usize,
    delivered: usize,
    downtime: Duration,
}

/// Event ids accepted so far (shared with the sending tasks).
type Accepted = Arc<Mutex<HashSet<String>>>;

fn accepted_count(accepted: &Accepted) -> usize {
    accepted
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .len()
}

/// Sends events `chaos-0` .. `chaos-{events-1}` from `SENDERS` tasks; returns how many
/// were never accepted (each is retried for two minutes).
fn spawn_sender(
    client: &HttpClient,
    api: &str,
    events: u64,
    accepted: &Accepted,
) -> tokio::task::JoinHandle<u64> {
    let next = Arc::new(AtomicU64::new(0));
    let rejected = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (client, api, accepted) = (client.clone(), api.to_owned(), Arc::clone(accepted));
            let (next, rejected) = (Arc::clone(&next), Arc::clone(&rejected));
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Relaxed);
                    if i >= events {
                        return;
                    }
                    let id = format!("chaos-{i}");
                    let payload = format!(r#"{{"n":{i}}}"#);
                    if send_event(&client, &api, &id, &payload, Duration::from_secs(120)).await {
                        accepted
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(id);
                    } else {
                        rejected.fetch_add(1, Relaxed);
                    }
                }
            })
        })
        .collect();
    tokio::spawn(async move {
        for worker in workers {
            let _ = worker.await;
        }
        rejected.load(Relaxed)
    })
}

/// The disruptions in random order, each with the progress point (out of
/// `2 * events`) at which it happens, ascending.
fn plan(kills: u32, restart_database: bool, events: u64) -> Vec<(Disruption, usize)> {
    let mut what: Vec<Disruption> = (0..kills).map(|_| Disruption::Kill).collect();
    if restart_database {
        what.push(Disruption::DatabaseRestart);
    }
    let mut rng = rand::rng();
    what.shuffle(&mut rng);
    let total = 2.0 * events as f64;
    let mut points: Vec<usize> = what
        .iter()
        .map(|_| (total * rng.random_range(0.05..0.9)) as usize)
        .collect();
    points.sort_unstable();
    what.into_iter().zip(points).collect()
}

pub(crate) async fn run(args: &[String]) -> Result<(), String> {
    let options = options(args)?;
    let bin = webhookd_bin();
    let mut database = Database::start(options.store, "chaos")?;
    // The mock receiver: 50% failures, 5% hangs.
    let mock = Mock::start(&bin, 0.5, 0.05)?;
    let client = client();
    let mut server = Webhookd::new(&bin, &database, &mock.url, "chaos")?;
    server.start(&client).await?;
    let api = server.api();

    let accepted: Accepted = Arc::default();
    let started = Instant::now();
    let sender = spawn_sender(&client, &api, options.events, &accepted);
    let mut happened = Vec::new();
    let mut unexpected_exits = Vec::new();
    let mut last = Instant::now();
    for (what, point) in plan(options.kills, database.has_server(), options.events) {
        loop {
            if let Some(status) = server.exited() {
                unexpected_exits.push(format!(
                    "webhookd exited on its own ({status}) at {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                server.start(&client).await?;
            }
            let progress = accepted_count(&accepted) + mock.delivered();
            if progress >= point || last.elapsed() > STALL_LIMIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (at, accepted_then, delivered_then) = (
            started.elapsed(),
            accepted_count(&accepted),
            mock.delivered(),
        );
        let began = Instant::now();
        match what {
            Disruption::Kill => {
                server.kill().await;
                server.start(&client).await?;
            }
            Disruption::DatabaseRestart => {
                database.restart()?;
            }
        }
        eprintln!(
            "chaos: {what:?} at {:.1}s ({accepted_then} accepted, {delivered_then} delivered), back after {:.1}s",
            at.as_secs_f64(),
            began.elapsed().as_secs_f64()
        );
        happened.push(Happened {
            what,
            at,
            accepted: accepted_then,
            delivered: delivered_then,
            downtime: began.elapsed(),
        });
        last = Instant::now();
    }
    let rejected = sender.await.map_err(|e| e.to_string())?;

    // Drain: every accepted event delivered or dead.
    let ids: Vec<String> = accepted
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect();
    let states = await_final(&client, &api, &ids, DRAIN_LIMIT).await;
    let drain_secs = started.elapsed().as_secs_f64();
    if let Some(status) = server.exited() {
        unexpected_exits.push(format!(
            "webhookd exited on its own ({status}) while draining"
        ));
    }
    // The receiver logs a request before answering it: let the last lines arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let ok = mock.ok_counts();
    let (delivered, dead, lost, undrained) = tally(&states);
    // Delivered says the service, yet the receiver never answered 200: must not happen.
    let delivered_unseen = states
        .iter()
        .filter(|(id, s)| **s == Lookup::Status("delivered".into()) && !ok.contains_key(*id))
        .count();
    let mut unfinished: Vec<&String> = ids
        .iter()
        .filter(|id| !matches!(&states[*id], Lookup::Status(s) if s == "delivered" || s == "dead"))
        .collect();
    unfinished.sort();
    for id in unfinished.iter().take(3) {
        eprintln!(
            "chaos: unfinished {id}: {}",
            describe(&client, &api, id).await
        );
    }
    let disruptions: Vec<_> = happened
        .iter()
        .map(|h| {
            serde_json::json!({
                "what": match h.what {
                    Disruption::Kill => "webhookd SIGKILL + restart",
                    Disruption::DatabaseRestart => "database crash-restart",
                },
                "at_secs": h.at.as_secs_f64(),
                "accepted_before": h.accepted,
                "delivered_before": h.delivered,
                "outstanding": (options.events as usize).saturating_sub(h.delivered),
                "downtime_secs": h.downtime.as_secs_f64(),
            })
        })
        .collect();
    let report = serde_json::json!({
        "store": options.store.name(),
        "events": options.events,
        "kills": options.kills,
        "database_restarts": usize::from(database.has_server()),
        "accepted": ids.len(),
        "rejected": rejected,
        "delivered": delivered,
        "dead": dead,
        "lost": lost,
        "undrained": undrained,
        "duplicates": duplicates(&ok),
        "delivered_unseen_by_receiver": delivered_unseen,
        "unexpected_exits": unexpected_exits,
        "time_to_drain_secs": drain_secs,
        "disruptions": disruptions,
    });
    eprintln!(
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    let path = crate::report::write_json("chaos", "report", &report).map_err(|e| e.to_string())?;
    eprintln!("wrote {}", path.display());
    server.kill().await;
    let mut problems = Vec::new();
    if lost > 0 {
        problems.push(format!(
            "{lost} accepted events are unknown to the service (lost)"
        ));
    }
    if undrained > 0 {
        problems.push(format!(
            "{undrained} accepted events were neither delivered nor dead-lettered after {}s",
            DRAIN_LIMIT.as_secs()
        ));
    }
    if rejected > 0 {
        problems.push(format!("{rejected} events were refused for two minutes"));
    }
    if delivered_unseen > 0 {
        problems.push(format!(
            "{delivered_unseen} events are marked delivered that the receiver never accepted"
        ));
    }
    problems.extend(unexpected_exits);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
