-- list_endpoints: ARGV = prefix, has_tenant (0/1: all tenants when 0), tenant
local filter, tenant = ARGV[2] == '1', ARGV[3]
local out = {}
for _, id in ipairs(redis.call('ZRANGE', K_ENDPOINTS, 0, -1)) do
  local f = redis.call('HMGET', k_ep(id), 'json', 'tenant', 'deleting')
  if f[1] and not f[3] and (not filter or f[2] == tenant) then
    out[#out + 1] = f[1]
  end
end
return out
