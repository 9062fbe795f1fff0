-- complete: ARGV = prefix, now, n, then n groups of 9:
--   dkey, lease token, kind (delivered|dead|retry|defer), at (retry/defer: when due),
--   has_attempt (0/1), attempt JSON, status ('' for none), has_error (0/1), error.
-- Each is applied only if the delivery is in flight under that token.
-- Returns one 1 (applied) or 0 (lease lost) per group.
local now = ARGV[2]
local res = {}
for i = 0, tonumber(ARGV[3]) - 1 do
  local b = 3 + 9 * i
  local dkey, token, kind, at = ARGV[b + 1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local seq = redis.call('HGET', K_DKEYS, dkey)
  local applied = 0
  if seq then
    local d = k_d(seq)
    local f = redis.call('HMGET', d, 'state', 'token', 'endpoint')
    if f[1] == 'in_flight' and f[2] == token then
      local ep = f[3]
      if ARGV[b + 5] == '1' then
        redis.call('HINCRBY', d, 'attempts', 1)
        if ARGV[b + 7] ~= '' then
          redis.call('HSET', d, 'status', ARGV[b + 7])
        else
          redis.call('HDEL', d, 'status')
        end
        if ARGV[b + 8] == '1' then
          redis.call('HSET', d, 'error', ARGV[b + 9])
        else
          redis.call('HDEL', d, 'error')
        end
        redis.call('RPUSH', k_att(seq), ARGV[b + 6])
      end
      if kind == 'delivered' or kind == 'dead' then
        redis.call('HSET', d, 'state', kind, 'at', now, 'updated', now)
        redis.call('ZREM', k_sched(ep), seq)
        redis.call('ZREM', k_unf(ep), seq)
        if kind == 'dead' then
          redis.call('ZADD', K_DEAD, now, seq)
        else
          redis.call('ZADD', K_DONE, now, seq)
        end
      else
        redis.call('HSET', d, 'state', 'pending', 'at', at, 'updated', now)
        redis.call('ZADD', k_sched(ep), at, seq)
      end
      refresh(ep)
      applied = 1
    end
  end
  res[#res + 1] = applied
end
return res
