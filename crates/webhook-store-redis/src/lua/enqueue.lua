-- enqueue: ARGV = prefix, now, ekey, event id, has_tenant, tenant, has_type, type,
-- created_at, priority, payload, n, then n pairs (endpoint id, dkey).
-- Returns {'not_found', id} or {'invalid', id} having written nothing, or
-- {'ok', created, existing}.
local now = ARGV[2]
local ekey, event_id = ARGV[3], ARGV[4]
local has_tenant, tenant = ARGV[5] == '1', ARGV[6]
local priority = ARGV[10]
local n = tonumber(ARGV[12])
for i = 0, n - 1 do
  local ep = ARGV[13 + 2 * i]
  local f = redis.call('HMGET', k_ep(ep), 'json', 'tenant')
  if not f[1] then return {'not_found', ep} end
  local same
  if has_tenant then same = f[2] == tenant else same = not f[2] end
  if not same then return {'invalid', ep} end
end
local fresh, existing, seen = {}, 0, {}
for i = 0, n - 1 do
  local ep, dkey = ARGV[13 + 2 * i], ARGV[14 + 2 * i]
  if seen[dkey] or redis.call('HEXISTS', K_DKEYS, dkey) == 1 then
    existing = existing + 1
  else
    seen[dkey] = true
    fresh[#fresh + 1] = {ep, dkey}
  end
end
if #fresh == 0 then return {'ok', 0, existing} end
local eseq = redis.call('HGET', K_EKEYS, ekey)
if not eseq then
  eseq = pad(redis.call('INCR', K_ESEQ))
  local ev = k_ev(eseq)
  redis.call('HSET', ev, 'id', event_id, 'ekey', ekey, 'created', ARGV[9],
    'priority', priority, 'payload', ARGV[11])
  if has_tenant then redis.call('HSET', ev, 'tenant', tenant) end
  if ARGV[7] == '1' then redis.call('HSET', ev, 'type', ARGV[8]) end
  redis.call('HSET', K_EKEYS, ekey, eseq)
end
for _, f in ipairs(fresh) do
  local ep, dkey = f[1], f[2]
  local seq = pad(redis.call('INCR', K_SEQ))
  local d = k_d(seq)
  redis.call('HSET', d, 'endpoint', ep, 'event', event_id, 'dkey', dkey, 'eseq', eseq,
    'state', 'pending', 'at', now, 'attempts', 0, 'priority', priority,
    'created', now, 'updated', now, 'token', 0)
  if has_tenant then redis.call('HSET', d, 'tenant', tenant) end
  redis.call('HSET', K_DKEYS, dkey, seq)
  redis.call('ZADD', k_evd(eseq), seq, seq)
  redis.call('ZADD', k_sched(ep), now, seq)
  redis.call('ZADD', k_unf(ep), seq, seq)
  redis.call('SADD', k_epd(ep), seq)
  refresh(ep)
end
return {'ok', #fresh, existing}
