-- get_event: ARGV = prefix, ekey. Returns false or
-- {event fields, { {delivery fields, attempts}, ... } } with deliveries in creation order.
local eseq = redis.call('HGET', K_EKEYS, ARGV[2])
if not eseq then return false end
local deliveries = {}
for _, seq in ipairs(redis.call('ZRANGE', k_evd(eseq), 0, -1)) do
  deliveries[#deliveries + 1] =
    {redis.call('HGETALL', k_d(seq)), redis.call('LRANGE', k_att(seq), 0, -1)}
end
return {redis.call('HGETALL', k_ev(eseq)), deliveries}
