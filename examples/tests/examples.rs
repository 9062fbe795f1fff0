//! The examples run end to end: the quickstart delivers to a local receiver that
//! verifies its signature, and the custom store passes the conformance suite.

#![allow(dead_code, missing_docs, unreachable_pub)]

#[path = "../quickstart.rs"]
mod quickstart;

#[path = "../custom_store.rs"]
mod custom_store;

use std::{
    convert::Infallible,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use webhook_dispatcher::DeliveryState;
use webhook_sdk::WebhookReceiver;

#[tokio::test]
async fn quickstart_delivers_a_verified_webhook() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhook", listener.local_addr().unwrap());
    let verified = Arc::new(Mutex::new(Vec::new()));
    let seen = verified.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let seen = seen.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let headers: Vec<(String, String)> = req
                            .headers()
                            .iter()
                            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
                            .collect();
                        let body = req.into_body().collect().await.unwrap().to_bytes();
                        let ok = WebhookReceiver::new(b"supersecret")
                            .verify_signature(&headers, &body)
                            .is_ok();
                        seen.lock().unwrap().push((ok, body));
                        let status = if ok { 200 } else { 401 };
                        Ok::<_, Infallible>(
                            Response::builder()
                                .status(status)
                                .body(Full::new(Bytes::new()))
                                .unwrap(),
                        )
                    }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });

    let record = quickstart::run(&url).await.unwrap();
    assert!(
        matches!(record.delivery.state, DeliveryState::Delivered { .. }),
        "{record:?}"
    );
    let seen = verified.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].0, "signature verified by webhook-sdk");
    assert_eq!(&seen[0].1[..], br#"{"id":123}"#);
}

#[tokio::test]
async fn custom_store_passes_the_conformance_suite() {
    webhook_core::testkit::run_all(|| async { custom_store::CountingStore::default() }).await;
}
