-- list_dead: ARGV = prefix, has_tenant, tenant, has_endpoint, endpoint, limit.
-- Returns the matching dead deliveries' fields, oldest first.
local by_tenant, tenant = ARGV[2] == '1', ARGV[3]
local by_endpoint, endpoint = ARGV[4] == '1', ARGV[5]
local limit = tonumber(ARGV[6])
local out = {}
local start = 0
while #out < limit do
  local batch = redis.call('ZRANGE', K_DEAD, start, start + 255)
  for _, seq in ipairs(batch) do
    local d = k_d(seq)
    local f = redis.call('HMGET', d, 'tenant', 'endpoint')
    local ok = (not by_endpoint or f[2] == endpoint)
    if ok and by_tenant then ok = f[1] == tenant end
    if ok then
      out[#out + 1] = redis.call('HGETALL', d)
      if #out >= limit then break end
    end
  end
  if #batch < 256 then break end
  start = start + 256
end
return out
