-- get_delivery: ARGV = prefix, dkey. Returns false or the delivery record (its
-- attempts included).
local seq = redis.call('HGET', K_DKEYS, ARGV[2])
if not seq then return false end
return redis.call('GET', k_d(seq))
