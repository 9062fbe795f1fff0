//! A dispatcher process for the cross-process tests.
//!
//! `dispatch-child STORE_SPEC RECEIVER_URL PREFIX COUNT`: registers endpoint `e` at
//! the receiver, dispatches events `PREFIX0..PREFIX{COUNT-1}`, printing `ack <id>`
//! once each `dispatch` has returned (the event is then durable), and keeps
//! delivering until killed.

use std::{io::Write, time::Duration};

use webhook_dispatcher::{Dispatcher, DispatcherConfig, Endpoint, Event, RetryPolicy};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [spec, url, prefix, count] = &args[..] else {
        eprintln!("usage: dispatch-child STORE_SPEC RECEIVER_URL PREFIX COUNT");
        std::process::exit(2);
    };
    let count: u64 = count.parse().expect("COUNT is a number");
    let store = webhook_integration::open_store(spec)
        .await
        .expect("open store");
    let config = DispatcherConfig {
        request_timeout: Duration::from_secs(1),
        poll_interval: Duration::from_millis(50),
        default_retry_policy: RetryPolicy::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
            50,
        ),
        ..DispatcherConfig::default()
    };
    let dispatcher = Dispatcher::new_with_storage(config, store).await;
    dispatcher
        .register_endpoint(Endpoint::new("e", url.as_str()))
        .await
        .expect("register endpoint");
    let mut stdout = std::io::stdout().lock();
    for i in 0..count {
        let id = format!("{prefix}{i}");
        dispatcher
            .dispatch(
                Event::new(id.as_str(), format!("{{\"n\":{i}}}")),
                vec!["e".into()],
            )
            .await
            .expect("dispatch");
        writeln!(stdout, "ack {id}").expect("stdout");
        stdout.flush().expect("flush");
    }
    writeln!(stdout, "done").expect("stdout");
    stdout.flush().expect("flush");
    drop(stdout);
    std::future::pending::<()>().await;
}
