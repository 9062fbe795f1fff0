-- replay_batch: ARGV = prefix, now, has_tenant (0/1: every tenant when 0), tenant,
-- offset, count. Looks at `count` dead deliveries from rank `offset` and replays
-- those of the tenant. Returns {replayed, skipped, looked at}.
local filter, tenant = ARGV[3] == '1', ARGV[4]
local offset, count = tonumber(ARGV[5]), tonumber(ARGV[6])
local batch = redis.call('ZRANGE', K_DEAD, offset, offset + count - 1)
local replayed, skipped = 0, 0
for _, seq in ipairs(batch) do
  local t = redis.call('HGET', k_d(seq), 'tenant')
  if not filter or t == tenant then
    replay(seq, ARGV[2])
    replayed = replayed + 1
  else
    skipped = skipped + 1
  end
end
return {replayed, skipped, #batch}
