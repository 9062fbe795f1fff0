//! The `webhookd` binary: see `webhookd --help`.

use std::process::ExitCode;

use clap::Parser as _;
use webhookd::{
    App, Settings,
    cli::{Cli, Command},
    logging, mock, shutdown_signal,
};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::MockReceiver(args)) => {
            logging::init(args.log_format);
            let listener = match tokio::net::TcpListener::bind(args.listen).await {
                Ok(l) => l,
                Err(e) => return fail(&format!("cannot listen on {}: {e}", args.listen)),
            };
            match mock::run(mock::MockConfig::from(&args), listener, shutdown_signal()).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("mock receiver failed: {e}")),
            }
        }
        None => {
            logging::init(cli.serve.log_format);
            let settings = match Settings::from_args(&cli.serve) {
                Ok(s) => s,
                Err(e) => return fail(&format!("invalid configuration: {e}")),
            };
            // The port first: the dispatcher resumes stored work as it starts, and
            // should not be started only to be abandoned because the port is taken.
            let listener = match tokio::net::TcpListener::bind(cli.serve.listen).await {
                Ok(l) => l,
                Err(e) => return fail(&format!("cannot listen on {}: {e}", cli.serve.listen)),
            };
            let app = match Box::pin(App::build(settings)).await {
                Ok(app) => app,
                Err(e) => return fail(&format!("cannot start: {e}")),
            };
            // A second SIGINT or SIGTERM during the graceful shutdown exits at once:
            // what is in flight is delivered again once its lease expires.
            let shutdown = async {
                shutdown_signal().await;
                tokio::spawn(async {
                    shutdown_signal().await;
                    tracing::warn!(
                        "second signal: exiting now; deliveries in flight are sent again \
                         once their leases expire"
                    );
                    std::process::exit(130);
                });
            };
            match Box::pin(app.serve(listener, shutdown)).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&format!("server failed: {e}")),
            }
        }
    }
}

fn fail(message: &str) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::FAILURE
}
