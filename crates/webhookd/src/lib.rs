//! `webhookd`: the webhook delivery service.
//!
//! An HTTP API (see [`routes::ROUTES`]) over a [`webhook_dispatcher::Dispatcher`] that
//! keeps its state in an embedded redb file, PostgreSQL or Redis; Prometheus metrics;
//! graceful shutdown; and a chaotic mock receiver ([`mock`]) for trying it out.
//!
//! The binary is a thin layer over this library: [`cli::Cli`] parses flags and
//! environment variables into [`Settings`], [`App::build`] opens the store and starts
//! the dispatcher, and [`App::serve`] answers HTTP until a shutdown signal. Tests build
//! [`Settings`] directly and run the same code in-process.
//!
//! See the crate README for a quickstart.

mod api;
mod auth;
mod error;
mod extract;

pub mod app;
pub mod cli;
pub mod logging;
pub mod metrics;
pub mod mock;
pub mod openapi;
pub mod routes;
pub mod settings;

pub use app::{App, StartError, shutdown_signal};
pub use settings::{Settings, StoreSpec};
