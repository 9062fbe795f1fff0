-- unfinished: ARGV = prefix. Returns how many deliveries are unfinished: the entries
-- of the schedules and ready sets (disjoint) of the endpoints with unfinished work.
local n = 0
for _, ep in ipairs(redis.call('ZRANGE', K_ACTIVE, 0, -1)) do
  n = n + redis.call('ZCARD', k_sched(ep)) + redis.call('ZCARD', k_rdy(ep))
end
return n
