-- list_dead: ARGV = prefix, has_tenant, tenant, has_endpoint, endpoint, limit.
-- Returns the matching dead deliveries' records, oldest first.
local by_tenant, tenant = ARGV[2] == '1', ARGV[3]
local by_endpoint, endpoint = ARGV[4] == '1', ARGV[5]
local limit = tonumber(ARGV[6])
local out = {}
local start = 0
while #out < limit do
  local batch = redis.call('ZRANGE', K_DEAD, start, start + 255)
  local keys = {}
  for i, seq in ipairs(batch) do keys[i] = k_d(seq) end
  local vals = mget(keys)
  for i = 1, #batch do
    local v = vals[i]
    if v then
      local t, ep = d_owner(v)
      local ok = (not by_endpoint or ep == endpoint)
      if ok and by_tenant then ok = t == tenant end
      if ok then
        out[#out + 1] = v
        if #out >= limit then break end
      end
    end
  end
  if #batch < 256 then break end
  start = start + 256
end
return out
