//! Project automation, run as `cargo xtask <command>` (see [`usage`]).
//!
//! - `ci`: everything CI checks: formatting, clippy (warnings are errors), every test
//!   (unit, integration, doc), a small chaos run on every store, `cargo deny`, and the
//!   purity check on the pure crates.
//! - `chaos` and `soak` build webhookd and `webhook-bench` in release mode and run
//!   `bench/src/chaos.rs` / `bench/src/soak.rs`.
//!
//! The throwaway PostgreSQL and Redis servers come from `webhook-testenv`
//! (`testenv/`), shared with `webhook-bench`.

use std::{
    env,
    path::PathBuf,
    process::{Command, ExitCode},
    time::Instant,
};

use webhook_testenv::Services;

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("purity") => purity(),
        Some("bench") => bench(&args[1..]),
        Some("integration") => integration(),
        Some("chaos") => release_tool("chaos", &args[1..]),
        Some("soak") => release_tool("soak", &args[1..]),
        _ => Err(usage()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> String {
    "usage: cargo xtask <command>

  ci           fmt, clippy -D warnings, all tests (with throwaway PostgreSQL and Redis),
               a small chaos run on every store (debug build), cargo deny, purity check
  integration  the store and end-to-end tests against PostgreSQL and Redis
  purity       check that webhook-core and webhook-sdk pull in no runtime, HTTP stack
               or database client
  bench [SCENARIO]
               run benchmarks (dispatcher, stores, api); figures go to
               target/bench/<scenario>.json
  chaos [--store redb|postgres|redis] [--events N] [--kills K]
               webhookd on that store (default redb) and the chaotic mock receiver;
               N events (default 1000) through the API while webhookd is SIGKILLed
               K times (default 3) and, for postgres and redis, a throwaway database
               is crash-restarted once; waits until every accepted event is delivered
               or dead, fails if any is lost; report in target/chaos/report.json
  soak [--minutes M] [--rate R] [--store redb|postgres|redis]
               steady load (R events/s, default 50) for M minutes (default 10) on
               webhookd; samples its resident memory and fails if it grows more than
               the threshold; report in target/soak/report.json"
        .to_owned()
}

fn ci() -> Result {
    cargo(&["fmt", "--all", "--", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--all-features",
        "--",
        "-D",
        "warnings",
    ])?;
    let services = Services::start()?;
    cargo_with(
        &["test", "--workspace", "--all-features", "--no-fail-fast"],
        &services.env(),
    )?;
    drop(services);
    ci_chaos()?;
    purity()?;
    deny()
}

/// Stores the CI chaos run covers, and its size: small enough that all three take
/// about a minute on a 2-core machine, large enough that the kill and the database
/// restart land while deliveries are outstanding.
const CI_CHAOS_STORES: &[&str] = &["redb", "postgres", "redis"];
const CI_CHAOS_ARGS: &[&str] = &["--events", "100", "--kills", "1"];

/// A small chaos run on every store, on debug builds: the test run has just compiled
/// every dependency with the same features (`--all-features` and, through `--tests`,
/// the dev-dependencies), so this only links the two binaries.
fn ci_chaos() -> Result {
    let started = Instant::now();
    cargo(&[
        "build",
        "--workspace",
        "--all-features",
        "--bins",
        "--tests",
    ])?;
    let bin = target_dir().join("debug");
    for store in CI_CHAOS_STORES {
        let mut args = vec!["chaos", "--store", store];
        args.extend(CI_CHAOS_ARGS);
        run_bench(&bin, &args)?;
    }
    eprintln!(
        "xtask: ci chaos on {} stores took {:.0}s",
        CI_CHAOS_STORES.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn target_dir() -> PathBuf {
    PathBuf::from(env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned()))
}

/// Runs `webhook-bench ARGS` from `bin_dir`, with `WEBHOOKD_BIN` set to the webhookd
/// binary beside it.
fn run_bench(bin_dir: &std::path::Path, args: &[&str]) -> Result {
    let bench = bin_dir.join("webhook-bench");
    let webhookd = bin_dir.join("webhookd");
    eprintln!("xtask: {} {}", bench.display(), args.join(" "));
    let status = Command::new(&bench)
        .args(args)
        .env("WEBHOOKD_BIN", &webhookd)
        .status()
        .map_err(|e| format!("cannot run {}: {e}", bench.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "webhook-bench {} failed ({status})",
            args.join(" ")
        ))
    }
}

/// The store conformance suites, the cross-process crash and two-node tests, and the
/// end-to-end tests, against PostgreSQL and Redis.
fn integration() -> Result {
    let services = Services::start()?;
    let mut packages: Vec<String> = workspace_packages()?
        .into_iter()
        .filter(|p| p.starts_with("webhook-store-") || p == "webhook-dispatcher" || p == "webhookd")
        .collect();
    packages.push("webhook-integration".to_owned());
    let mut args = vec!["test", "--all-features", "--no-fail-fast"];
    for p in &packages {
        args.extend(["--package", p.as_str()]);
    }
    cargo_with(&args, &services.env())
}

/// Names of the packages under `crates/`.
fn workspace_packages() -> Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir("crates")
        .map_err(|e| format!("read crates/: {e}"))?
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Ok(names)
}

/// Crates the pure layers must never depend on (as normal dependencies).
const IMPURE: &[&str] = &[
    "tokio",
    "hyper",
    "hyper-util",
    "hyper-rustls",
    "reqwest",
    "tokio-postgres",
    "postgres",
    "deadpool-postgres",
    "redis",
    "deadpool-redis",
    "redb",
    "sqlx",
    "openssl",
];

fn purity() -> Result {
    for (krate, also_banned) in [
        ("webhook-core", &[][..]),
        ("webhook-sdk", &["webhook-core"][..]),
    ] {
        let output = Command::new(env!("CARGO"))
            .args([
                "tree",
                "--edges",
                "normal",
                "--all-features",
                "--prefix",
                "none",
                "--format",
                "{p}",
                "--package",
                krate,
            ])
            .output()
            .map_err(|e| format!("cargo tree: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "cargo tree -p {krate} failed: {}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        let tree = String::from_utf8_lossy(&output.stdout);
        let offenders: Vec<&str> = tree
            .lines()
            .filter(|line| {
                let name = line.split_whitespace().next().unwrap_or("");
                IMPURE.contains(&name) || also_banned.contains(&name)
            })
            .collect();
        if !offenders.is_empty() {
            return Err(format!(
                "{krate} must stay pure but depends on: {}",
                offenders.join(", ")
            ));
        }
        eprintln!("xtask: purity: {krate} has no runtime, HTTP or database dependency");
    }
    Ok(())
}

fn deny() -> Result {
    let installed = Command::new(env!("CARGO"))
        .args(["deny", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        eprintln!("xtask: installing cargo-deny");
        cargo(&["install", "cargo-deny", "--locked"])?;
    }
    cargo(&["deny", "check", "licenses", "bans", "sources"])
}

/// `chaos` and `soak`: builds webhookd and `webhook-bench` in release mode and runs
/// `webhook-bench TOOL ARGS` (see `bench/src/chaos.rs` and `bench/src/soak.rs`). The
/// tools start their own servers (chaos restarts its database, so it must own it).
fn release_tool(tool: &str, args: &[String]) -> Result {
    cargo(&[
        "build",
        "--release",
        "--package",
        "webhookd",
        "--package",
        "webhook-bench",
    ])?;
    let mut run = vec![tool];
    run.extend(args.iter().map(String::as_str));
    run_bench(&target_dir().join("release"), &run)
}

/// Benchmark scenarios, in the order `cargo xtask bench` runs them.
const SCENARIOS: &[&str] = &["dispatcher", "stores", "api"];

fn bench(args: &[String]) -> Result {
    let chosen: Vec<&str> = match args.first() {
        Some(name) if SCENARIOS.contains(&name.as_str()) => vec![name.as_str()],
        Some(name) => return Err(format!("unknown scenario {name:?}; one of {SCENARIOS:?}")),
        None => SCENARIOS.to_vec(),
    };
    cargo(&["build", "--release", "--package", "webhook-bench"])?;
    // The stores scenario needs PostgreSQL and Redis.
    let services = Services::start()?;
    for scenario in chosen {
        cargo_with(
            &[
                "run",
                "--quiet",
                "--release",
                "--package",
                "webhook-bench",
                "--",
                scenario,
            ],
            &services.env(),
        )?;
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result {
    cargo_with(args, &[])
}

fn cargo_with(args: &[&str], envs: &[(&str, &str)]) -> Result {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}
