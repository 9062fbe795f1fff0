//! `cargo xtask soak [--minutes M] [--rate R] [--store redb|postgres|redis]`: webhookd
//! (embedded store by default) and the mock receiver (10 % failures, 1 % hangs) under
//! a steady load of R events per second through the API for M minutes. The resident
//! memory of the webhookd process (`VmRSS`) is sampled throughout; the run fails when
//! an accepted event is lost, or when the memory at the end is more than
//! [`MAX_GROWTH`] times the memory after warm-up plus what the store may legitimately
//! add: redb keeps pages of its file in a cache of bounded size (64 MiB by default),
//! which fills as the file grows, so on redb the allowance is the growth of the file
//! during the measurement, capped at that cache size (a 4-minute run at 400 events/s
//! shows RSS rising by about 0.85 KiB per event until the cache is full, then flat).
//! PostgreSQL and Redis keep their data in another process: no allowance. Writes
//! `target/soak/report.json`.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::{
    harness::{
        Database, HttpClient, Mock, StoreKind, Webhookd, await_final, client, duplicates,
        parse_flags, send_event, tally, webhookd_bin,
    },
    report::process_rss_bytes,
};

/// Largest accepted ratio of the resident memory at the end of the load (less the
/// store's cache allowance) to the memory after warm-up. Flat memory stays well below
/// it (docs/guarantees.md has measured figures); a leak of a few hundred bytes per
/// event exceeds it within minutes at the default rate.
const MAX_GROWTH: f64 = 1.25;
/// Most requests in flight at once: when the service slows down, the load waits here
/// instead of piling up tasks.
const MAX_IN_FLIGHT: usize = 256;
/// Longest wait after the load for the last deliveries.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

struct Options {
    store: StoreKind,
    duration: Duration,
    rate: u32,
}

fn options(args: &[String]) -> Result<Options, String> {
    let mut options = Options {
        store: StoreKind::Redb,
        duration: Duration::from_secs(600),
        rate: 50,
    };
    parse_flags(args, |flag, value| {
        match flag {
            "--minutes" => {
                let minutes: f64 = value.parse().map_err(|e| format!("--minutes: {e}"))?;
                options.duration = Duration::try_from_secs_f64(minutes * 60.0)
                    .ok()
                    .filter(|d| d.as_secs() >= 20)
                    .ok_or("--minutes: at least 20 seconds (0.34)")?;
            }
            "--rate" => {
                options.rate = value
                    .parse()
                    .ok()
                    .filter(|r| (1..=10_000).contains(r))
                    .ok_or("--rate: events per second, 1 to 10000")?;
            }
            "--store" => options.store = StoreKind::parse(value)?,
            other => return Err(format!("unknown flag {other}")),
        }
        Ok(())
    })?;
    Ok(options)
}

/// One memory sample.
#[derive(Clone, Copy)]
struct Sample {
    at: Duration,
    rss: u64,
    accepted: u64,
    delivered: usize,
    /// Bytes of the store's local files (redb).
    store_bytes: u64,
}

/// The median of the resident sizes of `samples`.
fn median_rss(samples: &[Sample]) -> u64 {
    let mut sizes: Vec<u64> = samples.iter().map(|s| s.rss).collect();
    sizes.sort_unstable();
    sizes.get(sizes.len() / 2).copied().unwrap_or(0)
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Counters shared with the load.
#[derive(Default)]
struct Load {
    accepted: AtomicU64,
    rejected: AtomicU64,
    ids: Mutex<Vec<String>>,
}

/// Sends `rate` events per second (ids `soak-N`) until `stop`; each is retried for 30 s.
fn spawn_load(
    client: &HttpClient,
    api: &str,
    rate: u32,
    stop: Instant,
    load: &Arc<Load>,
) -> tokio::task::JoinHandle<()> {
    let (client, api, load) = (client.clone(), api.to_owned(), Arc::clone(load));
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n = 0u64;
        while Instant::now() < stop {
            tick.tick().await;
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let (client, api, load) = (client.clone(), api.clone(), Arc::clone(&load));
            let id = format!("soak-{n}");
            let payload = format!(r#"{{"n":{n},"pad":"{n:0>160}"}}"#);
            n += 1;
            tokio::spawn(async move {
                if send_event(&client, &api, &id, &payload, Duration::from_secs(30)).await {
                    load.accepted.fetch_add(1, Relaxed);
                    load.ids
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(id);
                } else {
                    load.rejected.fetch_add(1, Relaxed);
                }
                drop(permit);
            });
        }
        // Wait for the requests still in flight.
        let _ = permits.acquire_many(MAX_IN_FLIGHT as u32).await;
    })
}

pub(crate) async fn run(args: &[String]) -> Result<(), String> {
    let options = options(args)?;
    let bin = webhookd_bin();
    let database = Database::start(options.store, "soak")?;
    let mock = Mock::start(&bin, 0.1, 0.01)?;
    let client = client();
    let mut server = Webhookd::new(&bin, &database, &mock.url, "soak")?;
    server.start(&client).await?;
    let pid = server.pid().ok_or("webhookd has no pid")?.to_string();
    let api = server.api();

    let warm_up = (options.duration / 5).clamp(Duration::from_secs(10), Duration::from_secs(60));
    let every = (options.duration / 60).clamp(Duration::from_secs(1), Duration::from_secs(10));
    eprintln!(
        "soak: {} events/s for {:.1} min on {}, warm-up {}s, a memory sample every {}s",
        options.rate,
        options.duration.as_secs_f64() / 60.0,
        options.store.name(),
        warm_up.as_secs(),
        every.as_secs()
    );
    let started = Instant::now();
    let stop = started + options.duration;
    let load = Arc::new(Load::default());
    let sender = spawn_load(&client, &api, options.rate, stop, &load);
    let mut samples: Vec<Sample> = Vec::new();
    let mut next_print = warm_up;
    while Instant::now() < stop {
        tokio::time::sleep(every.min(stop.saturating_duration_since(Instant::now()))).await;
        let rss = process_rss_bytes(&pid).ok_or("webhookd is gone: it exited during the soak")?;
        let sample = Sample {
            at: started.elapsed(),
            rss,
            accepted: load.accepted.load(Relaxed),
            delivered: mock.delivered(),
            store_bytes: database.local_bytes(),
        };
        if sample.at >= next_print {
            eprintln!(
                "soak: {:>5.0}s  rss {:>7.1} MiB  accepted {:>7}  delivered {:>7}",
                sample.at.as_secs_f64(),
                mib(sample.rss),
                sample.accepted,
                sample.delivered
            );
            next_print += options.duration / 10;
        }
        samples.push(sample);
    }
    let _ = sender.await;

    // The last deliveries: wait for the receiver to see every accepted event, then ask
    // the service about those it did not.
    let ids = load
        .ids
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let deadline = Instant::now() + DRAIN_LIMIT;
    while mock.delivered() < ids.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ok = mock.ok_counts();
    let unseen: Vec<String> = ids
        .iter()
        .filter(|id| !ok.contains_key(*id))
        .cloned()
        .collect();
    let states = await_final(&client, &api, &unseen, Duration::from_secs(5)).await;
    let (_, dead, lost, pending) = tally(&states);

    // Start: the median of the first three samples after warm-up; end: of the last three.
    let warm: Vec<Sample> = samples
        .iter()
        .copied()
        .filter(|s| s.at >= warm_up)
        .collect();
    let (start_rss, end_rss) = (
        median_rss(&warm[..warm.len().min(3)]),
        median_rss(&warm[warm.len().saturating_sub(3)..]),
    );
    let peak = warm.iter().map(|s| s.rss).max().unwrap_or(0);
    let ratio = |rss: u64| {
        if start_rss == 0 {
            0.0
        } else {
            rss as f64 / start_rss as f64
        }
    };
    let growth = ratio(end_rss);
    let store_growth = match (warm.first(), warm.last()) {
        (Some(first), Some(last)) => last.store_bytes.saturating_sub(first.store_bytes),
        _ => 0,
    };
    let allowance = match options.store {
        StoreKind::Redb => {
            let cache = webhook_store_redb::RedbOptions::default().cache_size;
            store_growth.min(u64::try_from(cache).unwrap_or(u64::MAX))
        }
        StoreKind::Postgres | StoreKind::Redis => 0,
    };
    let net_growth = ratio(end_rss.saturating_sub(allowance));
    let accepted = load.accepted.load(Relaxed);
    let rejected = load.rejected.load(Relaxed);
    let report = serde_json::json!({
        "store": options.store.name(),
        "minutes": options.duration.as_secs_f64() / 60.0,
        "rate_per_sec": options.rate,
        "warm_up_secs": warm_up.as_secs(),
        "accepted": accepted,
        "rejected": rejected,
        "achieved_rate_per_sec": accepted as f64 / options.duration.as_secs_f64(),
        "delivered": ids.len() - unseen.len(),
        "dead": dead,
        "pending_at_end": pending,
        "lost": lost,
        "duplicates": duplicates(&ok),
        "rss_start_mib": mib(start_rss),
        "rss_end_mib": mib(end_rss),
        "rss_peak_mib": mib(peak),
        "rss_growth": growth,
        "store_file_growth_mib": mib(store_growth),
        "store_cache_allowance_mib": mib(allowance),
        "rss_growth_less_allowance": net_growth,
        "max_growth": MAX_GROWTH,
        "samples": samples.iter().map(|s| serde_json::json!({
            "at_secs": s.at.as_secs(),
            "rss_mib": mib(s.rss),
            "accepted": s.accepted,
            "delivered": s.delivered,
            "store_mib": mib(s.store_bytes),
        })).collect::<Vec<_>>(),
    });
    eprintln!(
        "soak: accepted {accepted} ({:.1}/s), delivered {}, dead {dead}, pending {pending}, lost {lost}, duplicates {}",
        accepted as f64 / options.duration.as_secs_f64(),
        ids.len() - unseen.len(),
        duplicates(&ok)
    );
    eprintln!(
        "soak: webhookd rss after warm-up {:.1} MiB, at the end {:.1} MiB (peak {:.1} MiB): growth {growth:.3}; less the store cache allowance of {:.1} MiB: {net_growth:.3} (limit {MAX_GROWTH})",
        mib(start_rss),
        mib(end_rss),
        mib(peak),
        mib(allowance),
    );
    let path = crate::report::write_json("soak", "report", &report).map_err(|e| e.to_string())?;
    eprintln!("wrote {}", path.display());
    server.kill().await;
    drop(database);
    let mut problems = Vec::new();
    if net_growth > MAX_GROWTH {
        problems.push(format!(
            "webhookd's memory grew {net_growth:.2}x beyond the store's cache allowance (limit {MAX_GROWTH}x)"
        ));
    }
    if lost > 0 {
        problems.push(format!("{lost} accepted events were lost"));
    }
    if rejected > 0 {
        problems.push(format!("{rejected} events were refused for 30 s"));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}
