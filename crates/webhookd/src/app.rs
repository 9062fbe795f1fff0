//! The service: store, dispatcher and router, served until a shutdown signal.

use std::{
    collections::HashSet,
    future::Future,
    sync::{Arc, Mutex},
};

use axum::Router;
use tokio::net::TcpListener;
use webhook_core::{EndpointId, SignatureScheme, Store};
use webhook_dispatcher::{DestinationPolicy, Dispatcher, SealingStore};

use crate::{Settings, StoreSpec, auth::Auth, settings::Limits};

/// Why the service could not start.
pub type StartError = Box<dyn std::error::Error + Send + Sync>;

/// Key prefix of the Redis store unless `store_namespace` sets one.
const REDIS_PREFIX: &str = "webhookd";

/// File name of the embedded store in the data directory.
pub const REDB_FILE: &str = "webhookd.redb";

/// State shared by the handlers.
pub(crate) struct AppState {
    pub(crate) dispatcher: Dispatcher,
    pub(crate) auth: Auth,
    pub(crate) max_body_bytes: usize,
    pub(crate) limits: Limits,
    /// The store under the secret-sealing layer, for reads that need no secret (counts).
    pub(crate) raw_store: Arc<dyn Store>,
    /// Held while an endpoint is checked against the limits and created, so that
    /// concurrent creations in this process cannot overshoot
    /// [`Limits::max_endpoints_per_tenant`] or both take the same id.
    pub(crate) endpoint_creation: tokio::sync::Mutex<()>,
    pub(crate) webhook_secret: Option<String>,
    pub(crate) signature_scheme: SignatureScheme,
    pub(crate) target_url: Option<String>,
    pub(crate) destinations: DestinationPolicy,
    /// Implicit endpoints known to be registered (and up to date) in the store.
    pub(crate) implicit: Mutex<HashSet<EndpointId>>,
}

/// A built service: its store is open and its dispatcher running.
///
/// Dropping it stops the dispatcher abruptly (as a crash would: leases expire and the
/// work is picked up again later); [`App::serve`] and [`App::shutdown`] stop it
/// gracefully.
pub struct App {
    state: Arc<AppState>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// Opens the store, starts the dispatcher and resumes any work left in the store.
    ///
    /// # Errors
    /// When the store cannot be opened or reached, or the settings are invalid.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        settings.limits.validate()?;
        let mut config = settings.dispatcher.clone();
        config.destination_policy = if settings.allow_private_destinations {
            DestinationPolicy::allow_all()
        } else {
            DestinationPolicy::public_only()
        };
        config.max_payload_bytes = settings.max_body_bytes;
        // Refused now rather than accepted and then dead-lettered at the first event.
        if let Some(url) = &settings.target_url {
            let parsed = webhook_core::validate_url(url).map_err(|e| format!("TARGET_URL: {e}"))?;
            if let Some(refused) =
                crate::api::events::refused_destination(&config.destination_policy, &parsed)
            {
                return Err(format!("TARGET_URL: {refused}").into());
            }
        }
        config.validate()?;
        let raw_store = open_store(&settings).await?;
        let store = seal_secrets(&settings, raw_store.clone()).await?;
        let destinations = config.destination_policy.clone();
        let dispatcher = Dispatcher::new_with_storage(config, store).await;
        let state = AppState {
            dispatcher,
            auth: Auth::new(settings.api_token.as_deref(), &settings.tenant_tokens),
            max_body_bytes: settings.max_body_bytes,
            limits: settings.limits,
            raw_store,
            endpoint_creation: tokio::sync::Mutex::new(()),
            webhook_secret: settings.webhook_secret,
            signature_scheme: settings.signature_scheme,
            target_url: settings.target_url,
            destinations,
            implicit: Mutex::new(HashSet::new()),
        };
        tracing::info!(
            store = settings.store.kind(),
            auth = state.auth.required(),
            ssrf_guard = !settings.allow_private_destinations,
            default_target = state.target_url.is_some(),
            secret_encryption = settings.secret_encryption_key.is_some(),
            "webhookd ready"
        );
        Ok(Self {
            state: Arc::new(state),
        })
    }

    /// The HTTP API.
    pub fn router(&self) -> Router {
        crate::routes::router(self.state.clone())
    }

    /// The delivery engine.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.state.dispatcher
    }

    /// Serves the API on `listener` until `shutdown` completes, then stops accepting
    /// connections, lets requests in progress finish (for at most the dispatcher's
    /// shutdown timeout: a stalled client does not hold the shutdown up; its request
    /// was not acknowledged), and shuts the dispatcher down (in-flight deliveries
    /// finish or are released; nothing accepted is lost).
    ///
    /// # Errors
    /// When the listener fails.
    pub async fn serve<F>(self, listener: TcpListener, shutdown: F) -> std::io::Result<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        tracing::info!(addr = %listener.local_addr()?, "listening");
        // Small JSON answers go out at once instead of waiting on Nagle's algorithm.
        let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
        let served = axum::serve(listener, self.router())
            .with_graceful_shutdown(async move {
                shutdown.await;
                let _ = signalled.send(());
            })
            .into_future();
        let drain_limit = self.state.dispatcher.config().shutdown_timeout;
        let served = tokio::select! {
            served = served => served,
            () = async {
                if on_signal.await.is_ok() {
                    tokio::time::sleep(drain_limit).await;
                } else {
                    std::future::pending::<()>().await;
                }
            } => {
                tracing::warn!(
                    limit_secs = drain_limit.as_secs_f64(),
                    "requests still in progress at the shutdown timeout: shutting down \
                     without waiting for them"
                );
                Ok(())
            }
        };
        tracing::info!("stopped accepting requests; shutting down the dispatcher");
        self.shutdown().await;
        tracing::info!("shutdown complete");
        served
    }

    /// Shuts the dispatcher down gracefully (see [`Dispatcher::shutdown`]).
    pub async fn shutdown(&self) {
        self.state.dispatcher.shutdown().await;
    }
}

async fn open_store(settings: &Settings) -> Result<Arc<dyn Store>, StartError> {
    Ok(match &settings.store {
        StoreSpec::Redb => {
            std::fs::create_dir_all(&settings.data_dir).map_err(|e| {
                format!(
                    "cannot create the data directory {}: {e}",
                    settings.data_dir.display()
                )
            })?;
            let path = settings.data_dir.join(REDB_FILE);
            let shown = path.display().to_string();
            let store =
                tokio::task::spawn_blocking(move || webhook_store_redb::RedbStore::open(path))
                    .await?
                    .map_err(|e| format!("cannot open the store {shown}: {e}"))?;
            Arc::new(store)
        }
        StoreSpec::Postgres(url) => {
            let mut options = webhook_store_postgres::PostgresOptions::default();
            if let Some(schema) = &settings.store_namespace {
                options = options.with_schema(schema.clone());
            }
            Arc::new(
                webhook_store_postgres::PostgresStore::connect_with(url, options)
                    .await
                    .map_err(|e| format!("cannot connect to PostgreSQL: {e}"))?,
            )
        }
        StoreSpec::Redis(url) => {
            let prefix = settings.store_namespace.as_deref().unwrap_or(REDIS_PREFIX);
            Arc::new(
                webhook_store_redis::RedisStore::connect(url, prefix)
                    .await
                    .map_err(|e| format!("cannot connect to Redis: {e}"))?,
            )
        }
    })
}

/// Wraps the store in the secret-sealing layer (always: without a key it still refuses
/// to hand out encrypted secrets as if they were plaintext), and checks that every
/// stored secret can be read.
async fn seal_secrets(
    settings: &Settings,
    raw: Arc<dyn Store>,
) -> Result<Arc<dyn Store>, StartError> {
    let store = match &settings.secret_encryption_key {
        Some(key) => SealingStore::new(raw, key.clone()),
        None => SealingStore::without_key(raw),
    };
    match store.check().await {
        Ok(report) => {
            if let Some(key) = store.key() {
                tracing::info!(
                    key_id = key.id(),
                    encrypted = report.sealed,
                    plaintext = report.plaintext,
                    "endpoint secrets are encrypted in the store"
                );
                if report.plaintext > 0 {
                    tracing::warn!(
                        plaintext = report.plaintext,
                        "some endpoint secrets are still stored in plaintext; each is \
                         encrypted when its endpoint is next written (e.g. PUT /v1/endpoints/{{id}})"
                    );
                }
            }
        }
        // The store is down: the dispatcher retries; secrets are checked as they are read.
        Err(e) if e.is_retryable() => {
            tracing::warn!(error = %e, "cannot check the endpoint secrets now");
        }
        Err(e) => {
            let hint = if store.key().is_some() {
                "start webhookd with the key they were encrypted with"
            } else {
                "start webhookd with the key they were encrypted with \
                 (--secret-encryption-key or WEBHOOKD_SECRET_ENCRYPTION_KEY)"
            };
            return Err(format!("cannot read the endpoint secrets: {e}; {hint}").into());
        }
    }
    Ok(Arc::new(store))
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
