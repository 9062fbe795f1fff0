-- put_endpoint: ARGV = prefix, id, json, enabled (0/1), strict (0/1), has_tenant, tenant
local id = ARGV[2]
local key = k_ep(id)
redis.call('DEL', key)
redis.call('HSET', key, 'json', ARGV[3], 'enabled', ARGV[4], 'strict', ARGV[5])
if ARGV[6] == '1' then redis.call('HSET', key, 'tenant', ARGV[7]) end
redis.call('ZADD', K_ENDPOINTS, 0, id)
return 1
