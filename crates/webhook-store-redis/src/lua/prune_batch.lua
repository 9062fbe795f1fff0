-- prune_batch: ARGV = prefix, before, count. Removes up to `count` deliveries
-- delivered before `before` (and events left without deliveries).
-- Returns {removed, looked at}.
local seqs = redis.call('ZRANGEBYSCORE', K_DONE, '-inf', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
local removed = 0
for _, seq in ipairs(seqs) do
  if remove_delivery(seq) then removed = removed + 1 else redis.call('ZREM', K_DONE, seq) end
end
return {removed, #seqs}
