//! Project automation, run as `cargo xtask <command>`.
//!
//! - `ci`: everything CI checks: formatting, clippy (warnings are errors), every test
//!   (unit, integration, doc), `cargo deny`, and the purity check on the pure crates.

mod services;

use std::{
    env,
    process::{Command, ExitCode},
};

use services::Services;

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("purity") => purity(),
        Some("bench") => bench(&args[1..]),
        Some("integration") => integration(),
        Some("chaos") => chaos(&args[1..]),
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
    "usage: cargo xtask <command>\n\n  ci      fmt, clippy -D warnings, all tests (with throwaway PostgreSQL and Redis), cargo deny, purity check\n  integration  the store and end-to-end tests against PostgreSQL and Redis\n  purity  check that webhook-core and webhook-sdk pull in no runtime, HTTP stack or database client\n  bench [SCENARIO]  run benchmarks (dispatcher, stores, api); figures go to target/bench/<scenario>.json\n  chaos [--events N] [--kills K]  SIGKILL webhookd (embedded store) under load; report in target/chaos/report.json".to_owned()
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
    purity()?;
    deny()
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

/// Kills and restarts webhookd under load and checks nothing accepted is lost (see
/// `bench/src/chaos.rs`).
fn chaos(args: &[String]) -> Result {
    cargo(&[
        "build",
        "--release",
        "--package",
        "webhookd",
        "--package",
        "webhook-bench",
    ])?;
    let target = env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".to_owned());
    let bin = format!("{target}/release/webhookd");
    let mut run = vec![
        "run",
        "--quiet",
        "--release",
        "--package",
        "webhook-bench",
        "--",
        "chaos",
    ];
    run.extend(args.iter().map(String::as_str));
    cargo_with(&run, &[("WEBHOOKD_BIN", bin.as_str())])
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
