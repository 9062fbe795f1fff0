-- replay_one: ARGV = prefix, now, dkey. Returns 1 if the delivery was dead.
local seq = redis.call('HGET', K_DKEYS, ARGV[3])
if not seq then return 0 end
local v = redis.call('GET', k_d(seq))
if not v or d_state(v) ~= 'x' then return 0 end
replay(seq, v, ARGV[2])
return 1
