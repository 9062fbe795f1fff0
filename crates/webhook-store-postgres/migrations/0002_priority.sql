-- webhook-store-postgres, migration 2: claim due work by priority.
--
-- Within an endpoint, due deliveries are claimed highest priority first, then by due
-- time, then in creation order. The priority is the event's, copied onto each delivery
-- (it never changes) so that one index serves the due-work scan in that order.
ALTER TABLE deliveries ADD COLUMN priority smallint NOT NULL DEFAULT 0;
UPDATE deliveries d SET priority = e.priority
FROM events e
WHERE e.seq = d.event_seq AND e.priority <> 0;
-- The due-work scan, now by priority: replaces the index of migration 1.
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (endpoint_id, priority DESC, claimable_at, seq)
    WHERE state IN ('pending', 'in_flight');
