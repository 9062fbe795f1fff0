-- webhook-store-postgres, migration 1: the initial schema.
--
-- Applied inside one transaction with `search_path` set to the store's schema, so the
-- names below are unqualified. Tenants are stored as text, '' meaning "no tenant"
-- (empty tenant ids are refused by the store), so that every key is NOT NULL and
-- plain btree equality finds it.

-- Where webhooks go. `config` is the whole `Endpoint` as JSON, signing secret included;
-- `tenant`, `enabled` and `ordering` are copies that queries filter on.
CREATE TABLE endpoints (
    id         text COLLATE "C" PRIMARY KEY,
    tenant     text COLLATE "C" NOT NULL,
    config     jsonb NOT NULL,
    enabled    boolean NOT NULL,
    ordering   text NOT NULL CHECK (ordering IN ('unordered', 'strict')),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX endpoints_tenant ON endpoints (tenant, id);

-- Events, each stored once whatever the number of its deliveries.
CREATE TABLE events (
    seq        bigserial PRIMARY KEY,
    tenant     text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    event_type text,
    payload    bytea NOT NULL,
    created_at timestamptz NOT NULL,
    priority   smallint NOT NULL,
    CONSTRAINT events_key UNIQUE (tenant, id)
);

-- One row per (tenant, endpoint, event) key. Every index here is paid for on each
-- insert and each state change (these updates are not HOT), so there are few. `claimable_at` is `next_attempt_at` while
-- pending and `lease_until` while in flight (NULL once final); `finished_at` is when it
-- was delivered or died. `seq` is the dispatch order that strict ordering keeps.
CREATE TABLE deliveries (
    seq          bigserial PRIMARY KEY,
    tenant       text COLLATE "C" NOT NULL,
    endpoint_id  text COLLATE "C" NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    event_seq    bigint NOT NULL REFERENCES events (seq),
    state        text NOT NULL CHECK (state IN ('pending', 'in_flight', 'delivered', 'dead')),
    claimable_at timestamptz,
    finished_at  timestamptz,
    attempts     integer NOT NULL DEFAULT 0,
    last_status  integer,
    last_error   text,
    lease_token  bigint NOT NULL DEFAULT 0,
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    -- Also the index for an event's deliveries (event view, prune, the foreign key);
    -- deleting an endpoint scans the table instead, which is rare.
    CONSTRAINT deliveries_key UNIQUE (event_seq, endpoint_id),
    CONSTRAINT deliveries_claimable CHECK ((state IN ('pending', 'in_flight')) = (claimable_at IS NOT NULL)),
    CONSTRAINT deliveries_finished CHECK ((state IN ('delivered', 'dead')) = (finished_at IS NOT NULL))
);
-- The due-work scan: per endpoint, unfinished deliveries by the time they become claimable.
CREATE INDEX deliveries_due ON deliveries (endpoint_id, claimable_at, seq)
    WHERE state IN ('pending', 'in_flight');
-- Strict ordering: the oldest unfinished delivery of an endpoint.
CREATE INDEX deliveries_unfinished ON deliveries (endpoint_id, seq)
    WHERE state IN ('pending', 'in_flight');
-- The dead-letter queue, oldest first, for all tenants and for one.
CREATE INDEX deliveries_dead ON deliveries (finished_at, seq) WHERE state = 'dead';
CREATE INDEX deliveries_dead_tenant ON deliveries (tenant, finished_at, seq) WHERE state = 'dead';
-- Pruning old delivered work.
CREATE INDEX deliveries_delivered ON deliveries (finished_at) WHERE state = 'delivered';
-- A queue table churns: vacuum it early so dead index entries do not slow the due scan.
ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_analyze_scale_factor = 0.02);

-- Every HTTP attempt, oldest first by id.
CREATE TABLE attempts (
    id               bigserial PRIMARY KEY,
    delivery_seq     bigint NOT NULL REFERENCES deliveries (seq) ON DELETE CASCADE,
    started_at       timestamptz NOT NULL,
    duration_ms      bigint NOT NULL,
    status           integer,
    error            text,
    response_excerpt text
);
CREATE INDEX attempts_delivery ON attempts (delivery_seq, id);
