-- delete_endpoint: ARGV = prefix, id, count, begin (0/1). One step of deleting an
-- endpoint and all its deliveries, so that no call holds Redis for long: the first
-- step marks it deleting (hidden from reads, refused by enqueue and put, skipped by
-- claims), each step removes up to `count` of its deliveries, and the last drops the
-- endpoint. Without `begin`, only a deletion already under way goes on (an endpoint
-- put again meanwhile is a new one, and stays). Returns 0 when there is nothing to
-- delete, 1 when it is gone, 2 when deliveries are left (call again).
local id, count = ARGV[2], tonumber(ARGV[3])
local key = k_ep(id)
if redis.call('EXISTS', key) == 0 then
  redis.call('SREM', K_DELETING, id)
  return 0
end
if redis.call('HGET', key, 'deleting') ~= '1' then
  if ARGV[4] ~= '1' then return 0 end
  redis.call('HSET', key, 'enabled', '0', 'deleting', '1')
  redis.call('SADD', K_DELETING, id)
end
local seqs = redis.call('SRANDMEMBER', k_epd(id), count)
remove_deliveries(seqs)
-- Also those whose record is missing or names another endpoint (corrupt data), so
-- that every step makes progress.
bulk('SREM', k_epd(id), seqs)
if redis.call('SCARD', k_epd(id)) > 0 then return 2 end
redis.call('DEL', key, k_sched(id), k_rdy(id), k_unf(id), k_epd(id))
redis.call('ZREM', K_ENDPOINTS, id)
redis.call('ZREM', K_DUE, id)
redis.call('ZREM', K_ACTIVE, id)
redis.call('SREM', K_DELETING, id)
return 1
