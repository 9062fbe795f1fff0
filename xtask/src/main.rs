//! Project automation, run as `cargo xtask <command>`.
//!
//! - `ci`: everything CI checks: formatting, clippy (warnings are errors), every test
//!   (unit, integration, doc), `cargo deny`, and the purity check on the pure crates.

use std::{
    env,
    process::{Command, ExitCode},
};

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let args: Vec<String> = env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("purity") => purity(),
        Some("bench") => bench(&args[1..]),
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
    "usage: cargo xtask <command>\n\n  ci      fmt, clippy -D warnings, all tests, cargo deny, purity check\n  purity  check that webhook-core and webhook-sdk pull in no runtime, HTTP stack or database client\n  bench [SCENARIO]  run benchmarks (dispatcher); figures go to target/bench/<scenario>.json".to_owned()
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
    cargo(&["test", "--workspace", "--all-features", "--no-fail-fast"])?;
    purity()?;
    deny()
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

/// Benchmark scenarios, in the order `cargo xtask bench` runs them.
const SCENARIOS: &[&str] = &["dispatcher"];

fn bench(args: &[String]) -> Result {
    let chosen: Vec<&str> = match args.first() {
        Some(name) if SCENARIOS.contains(&name.as_str()) => vec![name.as_str()],
        Some(name) => return Err(format!("unknown scenario {name:?}; one of {SCENARIOS:?}")),
        None => SCENARIOS.to_vec(),
    };
    cargo(&["build", "--release", "--package", "webhook-bench"])?;
    for scenario in chosen {
        cargo(&["run", "--quiet", "--release", "--package", "webhook-bench", "--", scenario])?;
    }
    Ok(())
}

fn cargo(args: &[&str]) -> Result {
    eprintln!("xtask: cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cargo {} failed ({status})", args.join(" ")))
    }
}
