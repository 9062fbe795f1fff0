//! `webhook-bench SCENARIO`: measures and prints one line per figure, and writes
//! `target/bench/<scenario>.json` as `{"figures": [{"name", "value", "unit",
//! "baseline", "baseline_value", "ratio"}]}`. Run through `cargo xtask bench`.
//!
//! `webhook-bench chaos ...` and `webhook-bench soak ...` (through `cargo xtask chaos`
//! and `cargo xtask soak`) run webhookd as a process under faults or steady load and
//! write `target/chaos/report.json` / `target/soak/report.json`.

mod api;
mod chaos;
mod dispatcher;
mod harness;
mod receiver;
mod report;
mod soak;
mod stores;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().cloned().unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let tool = match scenario.as_str() {
        "chaos" => Some(runtime.block_on(chaos::run(&args[1..]))),
        "soak" => Some(runtime.block_on(soak::run(&args[1..]))),
        _ => None,
    };
    if let Some(result) = tool {
        return match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{scenario}: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let figures = match scenario.as_str() {
        "dispatcher" => runtime.block_on(dispatcher::run()),
        "stores" => runtime.block_on(stores::run()),
        "api" => runtime.block_on(api::run()),
        // Only the throughput figure, for profiling.
        "throughput" => runtime.block_on(dispatcher::throughput()),
        "memory" => runtime.block_on(dispatcher::memory_only()),
        "latency" => runtime.block_on(dispatcher::latency_only()),
        _ => {
            eprintln!("usage: webhook-bench <dispatcher|stores|api|chaos|soak> [ARGS]");
            return ExitCode::FAILURE;
        }
    };
    match report::write(&scenario, &figures) {
        Ok(path) => {
            eprintln!("wrote {}", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write the report: {e}");
            ExitCode::FAILURE
        }
    }
}
