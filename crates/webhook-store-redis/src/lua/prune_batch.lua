-- prune_batch: ARGV = prefix, before, count. Removes up to `count` deliveries
-- delivered before `before` (and events left without deliveries).
-- Returns {removed, looked at}.
local seqs = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local removed = 0
for i, found in ipairs(remove_deliveries(seqs)) do
  if found then removed = removed + 1 else redis.call('ZREM', K_DONE, seqs[i]) end
end
return {removed, #seqs}
