-- get_delivery: ARGV = prefix, dkey. Returns false or {delivery fields, attempts}.
local seq = redis.call('HGET', K_DKEYS, ARGV[2])
if not seq then return false end
return {redis.call('HGETALL', k_d(seq)), redis.call('LRANGE', k_att(seq), 0, -1)}
