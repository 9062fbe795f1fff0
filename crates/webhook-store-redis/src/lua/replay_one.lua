-- replay_one: ARGV = prefix, now, dkey. Returns 1 if the delivery was dead.
local seq = redis.call('HGET', K_DKEYS, ARGV[3])
if not seq then return 0 end
if redis.call('HGET', k_d(seq), 'state') ~= 'dead' then return 0 end
replay(seq, ARGV[2])
return 1
