//! `webhook-bench SCENARIO`: measures and prints one line per figure, and writes
//! `target/bench/<scenario>.json` as `{"figures": [{"name", "value", "unit",
//! "baseline", "baseline_value", "ratio"}]}`. Run through `cargo xtask bench`.

mod api;
mod chaos;
mod dispatcher;
mod receiver;
mod report;
mod stores;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().cloned().unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    if scenario == "chaos" {
        return match runtime.block_on(chaos::run(&args[1..])) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chaos: {e}");
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
            eprintln!("usage: webhook-bench <dispatcher|stores|api>");
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
