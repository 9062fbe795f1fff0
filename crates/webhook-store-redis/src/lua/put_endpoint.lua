-- put_endpoint: ARGV = prefix, id, json, enabled (0/1), strict (0/1), has_tenant, tenant.
-- Returns 1, or 0 having written nothing when the endpoint is being deleted (the
-- caller finishes the deletion and puts again).
local id = ARGV[2]
local key = k_ep(id)
if redis.call('HGET', key, 'deleting') == '1' then return 0 end
local was_strict = redis.call('HGET', key, 'strict') == '1'
redis.call('DEL', key)
redis.call('HSET', key, 'json', ARGV[3], 'enabled', ARGV[4], 'strict', ARGV[5])
if ARGV[6] == '1' then redis.call('HSET', key, 'tenant', ARGV[7]) end
redis.call('ZADD', K_ENDPOINTS, 0, id)
-- The dispatch order of unfinished deliveries is kept for strict endpoints only:
-- built when an endpoint becomes strict, dropped when it stops being strict.
local strict = ARGV[5] == '1'
if strict and not was_strict then
  redis.call('DEL', k_unf(id))
  local seqs = redis.call('SMEMBERS', k_epd(id))
  for i = 1, #seqs, 1000 do
    local keys, part = {}, {}
    for j = i, math.min(i + 999, #seqs) do
      part[#part + 1] = seqs[j]
      keys[#keys + 1] = k_d(seqs[j])
    end
    local vals = mget(keys)
    local add = {}
    for j, seq in ipairs(part) do
      local st = vals[j] and d_state(vals[j])
      if st == 'p' or st == 'f' then
        add[#add + 1] = seq
        add[#add + 1] = seq
      end
    end
    bulk('ZADD', k_unf(id), add)
  end
elseif was_strict and not strict then
  redis.call('DEL', k_unf(id))
end
return 1
