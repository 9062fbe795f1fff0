//! `enqueue` with group commit: concurrent calls are gathered by one task into batches,
//! each stored by one statement in one transaction, and every caller is answered once
//! its batch has committed.
//!
//! Each call keeps its own outcome: the batch statement checks every call alone (one
//! whose endpoints are missing or of another tenant writes nothing and the others go
//! on), a batch never holds two calls for the same event, and when the batch statement
//! fails (an endpoint deleted meanwhile, a deadlock, ...) its calls are retried one by
//! one, each reporting its own error.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use chrono::{DateTime, Utc};
use deadpool_postgres::{Client, Pool};
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_postgres::{error::SqlState, types::ToSql};
use webhook_core::{Error, Event, Result};

use crate::{
    decode::{count, get, tenant_column},
    error::{Redactor, corrupt},
    sql::Sql,
};

/// Most calls in one batch.
const MAX_BATCH: usize = 512;

/// Most batches being stored at once (each holds one pooled connection). Two lets one
/// batch fill while the other commits; more only makes smaller batches (measured).
const FLUSHES: usize = 2;

/// What one call did: deliveries created, and the tenant of each wanted endpoint
/// (`None`: missing). When an endpoint is missing or of another tenant, nothing was
/// written.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) created: usize,
    pub(crate) tenants: Vec<Option<String>>,
}

/// One queued call.
pub(crate) struct Job {
    event: Event,
    endpoints: Vec<String>,
    now: DateTime<Utc>,
    reply: oneshot::Sender<Result<Outcome>>,
}

impl Job {
    fn key(&self) -> (String, String) {
        (
            tenant_column(self.event.tenant_id.as_ref()).to_owned(),
            self.event.id.as_str().to_owned(),
        )
    }
}

/// What the statements need: shared by the store and its batching task.
#[derive(Clone)]
pub(crate) struct Ctx {
    pub(crate) pool: Pool,
    pub(crate) sql: Arc<Sql>,
    pub(crate) redactor: Redactor,
}

impl Ctx {
    /// One call, one statement (the path without batching, and the retry of a failed
    /// batch).
    pub(crate) async fn one(
        &self,
        client: &Client,
        event: &Event,
        endpoints: &[&str],
        now: DateTime<Utc>,
    ) -> Result<Outcome> {
        let statement = client
            .prepare_cached(&self.sql.enqueue)
            .await
            .map_err(|e| self.redactor.db(&e))?;
        let row = client
            .query_one(
                &statement,
                &[
                    &endpoints,
                    &tenant_column(event.tenant_id.as_ref()),
                    &event.id.as_str(),
                    &event.event_type.as_deref(),
                    &event.payload.as_ref(),
                    &event.created_at.unwrap_or(now),
                    &event.priority,
                    &now,
                ],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
                    Error::not_found("endpoint", "deleted while enqueueing")
                } else {
                    self.redactor.db(&e)
                }
            })?;
        Ok(Outcome {
            created: count(get(&row, "created")?)?,
            tenants: get(&row, "tenants")?,
        })
    }

    /// Several calls (distinct events), one statement: one outcome per call.
    async fn many(
        &self,
        client: &Client,
        jobs: &[Job],
    ) -> Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let statement = client.prepare_cached(&self.sql.enqueue_batch).await?;
        let mut tenants = Vec::with_capacity(jobs.len());
        let mut ids = Vec::with_capacity(jobs.len());
        let mut types = Vec::with_capacity(jobs.len());
        let mut payloads = Vec::with_capacity(jobs.len());
        let mut created_at = Vec::with_capacity(jobs.len());
        let mut priorities = Vec::with_capacity(jobs.len());
        let mut nows = Vec::with_capacity(jobs.len());
        let mut calls = Vec::new();
        let mut endpoints = Vec::new();
        for (call, job) in (1i64..).zip(jobs) {
            let event = &job.event;
            tenants.push(tenant_column(event.tenant_id.as_ref()));
            ids.push(event.id.as_str());
            types.push(event.event_type.as_deref());
            payloads.push(event.payload.as_ref());
            created_at.push(event.created_at.unwrap_or(job.now));
            priorities.push(event.priority);
            nows.push(job.now);
            for endpoint in &job.endpoints {
                calls.push(call);
                endpoints.push(endpoint.as_str());
            }
        }
        let params: [&(dyn ToSql + Sync); 9] = [
            &tenants,
            &ids,
            &types,
            &payloads,
            &created_at,
            &priorities,
            &nows,
            &calls,
            &endpoints,
        ];
        client.query(&statement, &params).await
    }

    /// Stores a batch and answers its callers.
    async fn flush(&self, jobs: Vec<Job>) {
        let client = match self.pool.get().await {
            Ok(client) => client,
            Err(e) => {
                for job in jobs {
                    let _ = job.reply.send(Err(self.redactor.pool(&e)));
                }
                return;
            }
        };
        if jobs.len() > 1 {
            // On failure nothing of the batch was written: retry its calls one by one.
            if let Ok(rows) = self.many(&client, &jobs).await {
                let outcome = |row: &tokio_postgres::Row| -> Result<Outcome> {
                    Ok(Outcome {
                        created: count(get(row, "created")?)?,
                        tenants: get(row, "tenants")?,
                    })
                };
                let whole = rows.len() == jobs.len();
                for (i, job) in jobs.into_iter().enumerate() {
                    let answer = match rows.get(i) {
                        Some(row) if whole => outcome(row).and_then(|o| {
                            if o.tenants.len() == job.endpoints.len() {
                                Ok(o)
                            } else {
                                Err(corrupt("enqueue", "a batch result of the wrong size"))
                            }
                        }),
                        _ => Err(corrupt("enqueue", "a batch result of the wrong size")),
                    };
                    let _ = job.reply.send(answer);
                }
                return;
            }
        }
        for job in jobs {
            let endpoints: Vec<&str> = job.endpoints.iter().map(String::as_str).collect();
            let outcome = self.one(&client, &job.event, &endpoints, job.now).await;
            let _ = job.reply.send(outcome);
        }
    }
}

/// The handle of the batching task.
pub(crate) struct Batcher {
    jobs: mpsc::UnboundedSender<Job>,
}

impl Batcher {
    /// Starts the task on the current Tokio runtime, if any.
    pub(crate) fn start(ctx: Ctx) -> Option<Self> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (jobs, receiver) = mpsc::unbounded_channel();
        runtime.spawn(run(ctx, receiver));
        Some(Self { jobs })
    }

    /// Queues a call and waits for its outcome. `None` when the task is gone (its
    /// runtime stopped): the caller stores the call itself.
    pub(crate) async fn enqueue(
        &self,
        event: &Event,
        endpoints: &[&str],
        now: DateTime<Utc>,
    ) -> Option<Result<Outcome>> {
        let (reply, answer) = oneshot::channel();
        let job = Job {
            event: event.clone(),
            endpoints: endpoints.iter().map(|&e| e.to_owned()).collect(),
            now,
            reply,
        };
        self.jobs.send(job).ok()?;
        answer.await.ok()
    }
}

/// Gathers queued calls into batches while earlier batches are being stored.
async fn run(ctx: Ctx, mut receiver: mpsc::UnboundedReceiver<Job>) {
    let flushes = Arc::new(Semaphore::new(FLUSHES));
    let mut held: VecDeque<Job> = VecDeque::new();
    loop {
        if held.is_empty() {
            match receiver.recv().await {
                Some(job) => held.push_back(job),
                None => return,
            }
        }
        let Ok(permit) = Arc::clone(&flushes).acquire_owned().await else {
            return;
        };
        // Let the callers that the last batch woke queue their next calls first, so this
        // batch carries more of them: each statement has a fixed cost of a few hundred
        // microseconds of server time, and a yield costs a few microseconds.
        tokio::task::yield_now().await;
        let mut keys = HashSet::new();
        let mut batch = Vec::new();
        let mut later = VecDeque::new();
        let mut take = |job: Job, batch: &mut Vec<Job>| {
            if batch.len() < MAX_BATCH && keys.insert(job.key()) {
                batch.push(job);
            } else {
                later.push_back(job);
            }
        };
        for job in held.drain(..) {
            take(job, &mut batch);
        }
        while batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => take(job, &mut batch),
                Err(_) => break,
            }
        }
        held = later;
        let ctx = ctx.clone();
        tokio::spawn(async move {
            ctx.flush(batch).await;
            drop(permit);
        });
    }
}
