-- webhook-store-postgres, migration 3: find an endpoint's deliveries in flight.
--
-- Concurrent enqueues take their seqs in one order and may commit in the other, so a
-- claim can find a strict endpoint's later delivery in flight when an earlier one
-- appears. The claim of a strict endpoint's oldest delivery checks, through this
-- index, that nothing of the endpoint is in flight under a live lease. It holds only
-- the deliveries in flight, so it stays small.
CREATE INDEX deliveries_in_flight ON deliveries (endpoint_id, claimable_at)
    WHERE state = 'in_flight';
