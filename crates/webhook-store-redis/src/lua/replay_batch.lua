-- replay_batch: ARGV = prefix, now, has_tenant (0/1: every tenant when 0), tenant,
-- offset, count. Looks at `count` dead deliveries from rank `offset` and replays
-- those of the tenant. Returns {replayed, skipped, looked at}.
local filter, tenant = ARGV[3] == '1', ARGV[4]
local offset, count = tonumber(ARGV[5]), tonumber(ARGV[6])
local batch = redis.call('ZRANGE', K_DEAD, offset, offset + count - 1)
local keys = {}
for i, seq in ipairs(batch) do keys[i] = k_d(seq) end
local vals = mget(keys)
local replayed, skipped = 0, 0
for i, seq in ipairs(batch) do
  local v = vals[i]
  if v and (not filter or tenant_is(v, true, tenant)) then
    replay(seq, v, ARGV[2])
    replayed = replayed + 1
  else
    skipped = skipped + 1
  end
end
return {replayed, skipped, #batch}
