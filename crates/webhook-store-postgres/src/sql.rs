//! Every statement the store runs, with `{s}` standing for the quoted schema.
//!
//! The statements are built once per store ([`Sql::new`]) and prepared once per pooled
//! connection (`prepare_cached`).

/// The columns [`crate::decode::delivery`] reads, from `deliveries d JOIN events e`.
macro_rules! delivery_columns {
    () => {
        "d.seq, d.tenant, d.endpoint_id, e.id AS event_id, d.state, d.claimable_at, \
         d.finished_at, d.attempts, d.last_status, d.last_error, e.priority, d.created_at, \
         d.updated_at, d.lease_token"
    };
}

/// The columns [`crate::decode::attempt`] reads, from `LEFT JOIN attempts a`.
macro_rules! attempt_columns {
    () => {
        "a.id AS attempt_id, a.started_at, a.duration_ms, a.status, a.error, a.response_excerpt"
    };
}

/// The columns [`crate::decode::event`] reads, from `events e`.
macro_rules! event_columns {
    () => {
        "e.tenant AS event_tenant, e.id AS event_id, e.event_type, e.payload, \
         e.created_at AS event_created_at, e.priority"
    };
}

const PUT_ENDPOINT: &str = "\
INSERT INTO {s}.endpoints AS ep (id, tenant, config, enabled, ordering, updated_at)
VALUES ($1, $2, $3, $4, $5, now())
ON CONFLICT (id) DO UPDATE SET
    tenant = EXCLUDED.tenant, config = EXCLUDED.config, enabled = EXCLUDED.enabled,
    ordering = EXCLUDED.ordering, updated_at = now()";

const GET_ENDPOINT: &str = "SELECT config FROM {s}.endpoints WHERE id = $1";

const LIST_ENDPOINTS: &str = "SELECT config FROM {s}.endpoints ORDER BY id";

const LIST_TENANT_ENDPOINTS: &str =
    "SELECT config FROM {s}.endpoints WHERE tenant = $1 ORDER BY id";

const LOCK_ENDPOINT: &str = "SELECT 1 FROM {s}.endpoints WHERE id = $1 FOR UPDATE";

/// Deletes the endpoint and its deliveries (attempts cascade), and locks the events
/// that may be left without deliveries; [`DELETE_ORPHAN_EVENTS`] follows.
const DELETE_ENDPOINT: &str = "\
WITH gone_endpoint AS (
    DELETE FROM {s}.endpoints WHERE id = $1 RETURNING id
), gone AS (
    DELETE FROM {s}.deliveries WHERE endpoint_id = $1 RETURNING event_seq
), locked AS (
    SELECT seq FROM {s}.events WHERE seq IN (SELECT event_seq FROM gone)
    FOR UPDATE SKIP LOCKED
)
SELECT ARRAY(SELECT seq FROM locked) AS events";

/// Deletes the events of `$1` (locked by the caller's transaction) that have no
/// delivery left. Runs as its own statement, so its snapshot sees every delivery
/// committed before the lock was taken.
const DELETE_ORPHAN_EVENTS: &str = "\
DELETE FROM {s}.events e
WHERE e.seq = ANY($1::int8[])
  AND NOT EXISTS (SELECT 1 FROM {s}.deliveries d WHERE d.event_seq = e.seq)";

/// Checks the endpoints, stores the event once and one delivery per new key, in one
/// statement (so one round trip and one implicit transaction). Writes nothing unless
/// every endpoint exists and belongs to the event's tenant; returns what it found so
/// the caller can name the failure.
const ENQUEUE: &str = "\
WITH wanted AS (
    SELECT w.id, w.ord FROM unnest($1::text[]) WITH ORDINALITY AS w(id, ord)
), checked AS (
    SELECT w.id, w.ord, ep.tenant FROM wanted w LEFT JOIN {s}.endpoints ep ON ep.id = w.id
), verdict AS (
    SELECT count(*) > 0 AND bool_and(tenant IS NOT NULL AND tenant = $2) AS ok FROM checked
), ev AS (
    INSERT INTO {s}.events AS ev_t (tenant, id, event_type, payload, created_at, priority)
    SELECT $2, $3, $4, $5, $6, $7 FROM verdict WHERE ok
    ON CONFLICT (tenant, id) DO UPDATE SET priority = ev_t.priority
    RETURNING seq, priority
), created AS (
    INSERT INTO {s}.deliveries (tenant, endpoint_id, event_seq, state, claimable_at, created_at, updated_at, priority, lease_token)
    SELECT $2, w.id, ev.seq, 'pending', $8, $8, $8, ev.priority, (extract(epoch FROM $8::timestamptz) * 1000000)::bigint FROM ev CROSS JOIN wanted w ORDER BY w.ord
    ON CONFLICT (event_seq, endpoint_id) DO NOTHING
    RETURNING 1
)
SELECT (SELECT count(*) FROM created) AS created,
       ARRAY(SELECT tenant FROM checked ORDER BY ord) AS tenants";

/// [`ENQUEUE`] for a batch of calls at once (group commit), one statement and one
/// transaction for all. The calls' `(tenant, event id)` keys are distinct. Each call is
/// checked alone: one whose endpoints are missing or of another tenant writes nothing,
/// the others go on. Events are written in key order, so that concurrent batches
/// holding the same events lock them in the same order; deliveries in call order. Returns, per call (1-based, in batch order), how many deliveries
/// it created and the tenants of its endpoints (NULL when missing).
///
/// - `$1`..`$7`: per call, tenant, event id, type, payload, created_at, priority, now.
/// - `$8`, `$9`: per wanted endpoint, its call and its id, in each call's order.
const ENQUEUE_BATCH: &str = "\
WITH calls AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bytea[], $5::timestamptz[],
                         $6::int2[], $7::timestamptz[])
        WITH ORDINALITY AS c(tenant, id, event_type, payload, created_at, priority, now, call)
), wanted AS (
    SELECT w.call, w.id, w.ord FROM unnest($8::int8[], $9::text[]) WITH ORDINALITY AS w(call, id, ord)
), checked AS MATERIALIZED (
    SELECT w.call, w.id, w.ord, ep.tenant FROM wanted w LEFT JOIN {s}.endpoints ep ON ep.id = w.id
), verdict AS (
    SELECT c.call, bool_and(k.tenant IS NOT NULL AND k.tenant = c.tenant) AS ok
    FROM calls c JOIN checked k ON k.call = c.call
    GROUP BY c.call
), ev AS (
    INSERT INTO {s}.events AS ev_t (tenant, id, event_type, payload, created_at, priority)
    SELECT c.tenant, c.id, c.event_type, c.payload, c.created_at, c.priority
    FROM calls c JOIN verdict v ON v.call = c.call
    WHERE v.ok
    ORDER BY c.tenant, c.id
    ON CONFLICT (tenant, id) DO UPDATE SET priority = ev_t.priority
    RETURNING seq, tenant, id, priority
), created AS (
    INSERT INTO {s}.deliveries (tenant, endpoint_id, event_seq, state, claimable_at, created_at, updated_at, priority, lease_token)
    SELECT c.tenant, w.id, ev.seq, 'pending', c.now, c.now, c.now, ev.priority, (extract(epoch FROM c.now) * 1000000)::bigint
    FROM calls c
    JOIN ev ON ev.tenant = c.tenant AND ev.id = c.id
    JOIN wanted w ON w.call = c.call
    ORDER BY w.ord
    ON CONFLICT (event_seq, endpoint_id) DO NOTHING
    RETURNING event_seq
), made AS (
    SELECT event_seq, count(*) AS n FROM created GROUP BY event_seq
), found AS (
    SELECT call, array_agg(tenant ORDER BY ord) AS tenants FROM checked GROUP BY call
)
SELECT c.call, COALESCE(m.n, 0) AS created, f.tenants
FROM calls c
JOIN found f ON f.call = c.call
LEFT JOIN ev ON ev.tenant = c.tenant AND ev.id = c.id
LEFT JOIN made m ON m.event_seq = ev.seq
ORDER BY c.call";

/// Claims due work in one statement.
///
/// - `eps`: enabled endpoints not limited to 0, each with its limit (the override, else
///   the default, capped by the total), in round-robin order: those after the cursor
///   `$7` first, then from the start.
/// - `picked`: for each endpoint in that order, its due deliveries, highest priority
///   first, then oldest due first, then in creation order,
///   locked with `FOR UPDATE SKIP LOCKED` so concurrent claimers take disjoint rows. A
///   strict endpoint offers only its oldest unfinished delivery, only while none of its
///   others is in flight under a live lease (concurrent enqueues may commit out of seq
///   order; `deliveries_in_flight` finds them), and only when that one is claimable (`claimable_at` is NULL once final, so `claimable_at <= $1` is the
///   whole check, and it leaves the planner only the primary key for that lookup). The
///   nested loop stops as soon as `LIMIT $6` rows are found, so only
///   the rows handed out are locked.
/// - The update takes the lease and returns each delivery with its event, and when it
///   was due (`due`) so the caller can put the batch in claim order. It finds the rows
///   through `seq = ANY(ARRAY(...))`, i.e. the primary key: joined to `picked` alone,
///   the planner would rather hash the whole table (a seq scan that grows with it).
const CLAIM: &str = concat!(
    "\
WITH overrides AS (
    SELECT o.id, o.lim FROM unnest($4::text[], $5::int8[]) AS o(id, lim)
), eps AS (
    SELECT e.id, e.ordering = 'strict' AS strict, LEAST(COALESCE(o.lim, $3), $6) AS lim
    FROM {s}.endpoints e LEFT JOIN overrides o ON o.id = e.id
    WHERE e.enabled AND COALESCE(o.lim, $3) > 0
    ORDER BY e.id <= $7, e.id
), picked AS (
    SELECT c.seq, c.due
    FROM eps ep
    CROSS JOIN LATERAL (
        SELECT u.seq, u.due FROM (
            SELECT d.seq, d.claimable_at AS due FROM {s}.deliveries d
            WHERE NOT ep.strict AND d.endpoint_id = ep.id
              AND d.state IN ('pending', 'in_flight') AND d.claimable_at <= $1
            ORDER BY d.priority DESC, d.claimable_at, d.seq
            LIMIT ep.lim
            FOR UPDATE SKIP LOCKED
        ) u
        UNION ALL
        SELECT h.seq, h.due FROM (
            SELECT d.seq, d.claimable_at AS due FROM {s}.deliveries d
            WHERE ep.strict AND d.seq = (
                    SELECT f.seq FROM {s}.deliveries f
                    WHERE f.endpoint_id = ep.id AND f.state IN ('pending', 'in_flight')
                    ORDER BY f.seq LIMIT 1)
              AND d.claimable_at <= $1
              AND NOT EXISTS (
                    SELECT 1 FROM {s}.deliveries x
                    WHERE x.endpoint_id = ep.id AND x.state = 'in_flight'
                      AND x.claimable_at > $1 AND x.seq <> d.seq)
            FOR UPDATE SKIP LOCKED
        ) h
    ) c
    LIMIT $6
)
UPDATE {s}.deliveries d
SET state = 'in_flight', claimable_at = $2, lease_token = d.lease_token + 1, updated_at = $1
FROM picked p, {s}.events e
WHERE d.seq = ANY(ARRAY(SELECT seq FROM picked)) AND d.seq = p.seq AND e.seq = d.event_seq
RETURNING p.due, ",
    delivery_columns!(),
    ", ",
    event_columns!()
);

/// Applies a batch of completions in one statement: each only while the delivery is in
/// flight under the same lease token; records the attempts of those applied and returns
/// their positions (1-based) in the batch.
///
/// `targets` finds each delivery by its key through the unique indexes (one lookup per
/// completion: the `LIMIT 1` keeps the planner from hashing the whole `events` table
/// instead, a scan that grows with it). The update then
/// takes each row by `seq` and checks `state = t.in_flight` (a column of `targets`, always
/// `'in_flight'`): a join condition rather than a constant, so stale statistics ("nothing
/// is in flight") cannot lure the planner into scanning a partial index or the table
/// instead, and the row estimate of the scan stays that of the batch, so the planner
/// hashes `targets` rather than rescanning it once per row (quadratic in the batch).
const COMPLETE: &str = "\
WITH f AS (
    SELECT * FROM unnest($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[],
                         $7::timestamptz[], $8::timestamptz[], $9::int8[], $10::int4[],
                         $11::text[], $12::text[])
        WITH ORDINALITY AS f(tenant, endpoint_id, event_id, token, kind, next_at,
                             started_at, duration_ms, status, error, excerpt, ord)
), targets AS MATERIALIZED (
    SELECT k.seq, 'in_flight'::text AS in_flight, f.* FROM f
    CROSS JOIN LATERAL (
        SELECT d.seq FROM {s}.events e
        JOIN {s}.deliveries d ON d.event_seq = e.seq AND d.endpoint_id = f.endpoint_id
        WHERE e.tenant = f.tenant AND e.id = f.event_id
        LIMIT 1
    ) k
), done AS (
    UPDATE {s}.deliveries d SET
        state = CASE t.kind WHEN 'delivered' THEN 'delivered' WHEN 'dead' THEN 'dead'
                ELSE 'pending' END,
        claimable_at = CASE WHEN t.kind IN ('retry', 'defer') THEN t.next_at END,
        finished_at = CASE WHEN t.kind IN ('delivered', 'dead') THEN $1::timestamptz END,
        attempts = d.attempts + CASE WHEN t.started_at IS NULL THEN 0 ELSE 1 END,
        last_status = CASE WHEN t.started_at IS NULL THEN d.last_status ELSE t.status END,
        last_error = CASE WHEN t.started_at IS NULL THEN d.last_error ELSE t.error END,
        updated_at = $1
    FROM targets t
    WHERE d.seq = ANY(ARRAY(SELECT seq FROM targets)) AND d.seq = t.seq AND d.state = t.in_flight AND d.lease_token = t.token
    RETURNING d.seq, t.ord, t.started_at, t.duration_ms, t.status, t.error, t.excerpt
), recorded AS (
    INSERT INTO {s}.attempts (delivery_seq, started_at, duration_ms, status, error, response_excerpt)
    SELECT seq, started_at, duration_ms, status, error, excerpt FROM done
    WHERE started_at IS NOT NULL
    ORDER BY ord
)
SELECT ord FROM done";

const GET_DELIVERY: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    ", ",
    attempt_columns!(),
    "
FROM {s}.deliveries d
JOIN {s}.events e ON e.seq = d.event_seq
LEFT JOIN {s}.attempts a ON a.delivery_seq = d.seq
WHERE e.tenant = $1 AND e.id = $2 AND d.endpoint_id = $3
ORDER BY a.id"
);

const GET_EVENT: &str = concat!(
    "SELECT ",
    event_columns!(),
    " FROM {s}.events e WHERE e.tenant = $1 AND e.id = $2"
);

const GET_EVENT_DELIVERIES: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    ", ",
    attempt_columns!(),
    "
FROM {s}.events e
JOIN {s}.deliveries d ON d.event_seq = e.seq
LEFT JOIN {s}.attempts a ON a.delivery_seq = d.seq
WHERE e.tenant = $1 AND e.id = $2
ORDER BY d.seq, a.id"
);

const LIST_DEAD_HEAD: &str = concat!(
    "SELECT ",
    delivery_columns!(),
    "
FROM {s}.deliveries d JOIN {s}.events e ON e.seq = d.event_seq
WHERE d.state = 'dead'"
);

const LIST_DEAD_TAIL: &str = " ORDER BY d.finished_at, d.seq LIMIT $1";

/// Replays one dead delivery, found by key (the state is hidden from the planner as in
/// [`COMPLETE`], so a large dead-letter queue with stale statistics is not scanned).
const REPLAY_DEAD: &str = "\
UPDATE {s}.deliveries d
SET state = 'pending', claimable_at = $4, finished_at = NULL, attempts = 0, updated_at = $4
FROM {s}.events e
WHERE e.tenant = $1 AND e.id = $2 AND d.event_seq = e.seq AND d.endpoint_id = $3
  AND d.state = (SELECT 'dead'::text)";

const REPLAY_ALL_DEAD: &str = "\
UPDATE {s}.deliveries
SET state = 'pending', claimable_at = $1, finished_at = NULL, attempts = 0, updated_at = $1
WHERE state = 'dead'";

const REPLAY_ALL_TENANT_DEAD: &str = "\
UPDATE {s}.deliveries
SET state = 'pending', claimable_at = $1, finished_at = NULL, attempts = 0, updated_at = $1
WHERE state = 'dead' AND tenant = $2";

/// Deletes up to `$2` delivered deliveries finished before `$1` (attempts cascade) and
/// locks their events; [`DELETE_ORPHAN_EVENTS`] follows in the same transaction.
/// Served by the partial index of unfinished deliveries.
const UNFINISHED: &str =
    "SELECT count(*) AS n FROM {s}.deliveries WHERE state IN ('pending', 'in_flight')";

const PRUNE: &str = "\
WITH gone AS (
    DELETE FROM {s}.deliveries WHERE seq IN (
        SELECT seq FROM {s}.deliveries
        WHERE state = 'delivered' AND finished_at < $1
        LIMIT $2)
    RETURNING event_seq
), locked AS (
    SELECT seq FROM {s}.events WHERE seq IN (SELECT event_seq FROM gone)
    FOR UPDATE SKIP LOCKED
)
SELECT (SELECT count(*) FROM gone) AS pruned, ARRAY(SELECT seq FROM locked) AS events";

/// The statements of one store, for its schema.
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) put_endpoint: String,
    pub(crate) get_endpoint: String,
    pub(crate) list_endpoints: String,
    pub(crate) list_tenant_endpoints: String,
    pub(crate) lock_endpoint: String,
    pub(crate) delete_endpoint: String,
    pub(crate) delete_orphan_events: String,
    pub(crate) enqueue: String,
    pub(crate) enqueue_batch: String,
    pub(crate) claim: String,
    pub(crate) complete: String,
    pub(crate) get_delivery: String,
    pub(crate) get_event: String,
    pub(crate) get_event_deliveries: String,
    /// Indexed by `tenant filter as bit 0 | endpoint filter as bit 1`.
    pub(crate) list_dead: [String; 4],
    pub(crate) replay_dead: String,
    pub(crate) replay_all_dead: String,
    pub(crate) replay_all_tenant_dead: String,
    pub(crate) prune: String,
    pub(crate) unfinished: String,
}

impl Sql {
    /// The statements for `schema`, already quoted.
    pub(crate) fn new(quoted_schema: &str) -> Self {
        let s = |sql: &str| sql.replace("{s}", quoted_schema);
        let list_dead = |tenant: bool, endpoint: bool| {
            let mut sql = s(LIST_DEAD_HEAD);
            if tenant {
                sql.push_str(" AND d.tenant = $2");
            }
            if endpoint {
                sql.push_str(if tenant {
                    " AND d.endpoint_id = $3"
                } else {
                    " AND d.endpoint_id = $2"
                });
            }
            sql.push_str(LIST_DEAD_TAIL);
            sql
        };
        Self {
            put_endpoint: s(PUT_ENDPOINT),
            get_endpoint: s(GET_ENDPOINT),
            list_endpoints: s(LIST_ENDPOINTS),
            list_tenant_endpoints: s(LIST_TENANT_ENDPOINTS),
            lock_endpoint: s(LOCK_ENDPOINT),
            delete_endpoint: s(DELETE_ENDPOINT),
            delete_orphan_events: s(DELETE_ORPHAN_EVENTS),
            enqueue: s(ENQUEUE),
            enqueue_batch: s(ENQUEUE_BATCH),
            claim: s(CLAIM),
            complete: s(COMPLETE),
            get_delivery: s(GET_DELIVERY),
            get_event: s(GET_EVENT),
            get_event_deliveries: s(GET_EVENT_DELIVERIES),
            list_dead: [
                list_dead(false, false),
                list_dead(true, false),
                list_dead(false, true),
                list_dead(true, true),
            ],
            replay_dead: s(REPLAY_DEAD),
            replay_all_dead: s(REPLAY_ALL_DEAD),
            replay_all_tenant_dead: s(REPLAY_ALL_TENANT_DEAD),
            prune: s(PRUNE),
            unfinished: s(UNFINISHED),
        }
    }
}
