-- delete_endpoint: ARGV = prefix, id. Drops the endpoint and all its deliveries.
local id = ARGV[2]
if redis.call('EXISTS', k_ep(id)) == 0 then return 0 end
redis.call('DEL', k_ep(id))
redis.call('ZREM', K_ENDPOINTS, id)
remove_deliveries(redis.call('SMEMBERS', k_epd(id)))
redis.call('DEL', k_sched(id), k_rdy(id), k_unf(id), k_epd(id))
redis.call('ZREM', K_DUE, id)
redis.call('ZREM', K_ACTIVE, id)
return 1
