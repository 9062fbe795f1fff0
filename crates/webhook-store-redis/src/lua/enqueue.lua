-- enqueue: ARGV = prefix, m, then m events, each as a count c and c arguments:
--   now, ekey, event id, has_tenant, tenant, has_type, type, created_at, priority,
--   payload, n, then n pairs (endpoint id, dkey).
-- Each event is enqueued on its own, as if by its own call in turn. Returns one reply
-- per event: {'not_found', id} or {'invalid', id} having written nothing for that
-- event, or {'ok', created, existing}.
-- The script is atomic, so the index entries of the whole batch are written together
-- at the end (one command per index), and the counters are read once and set once.

-- Bulk command `cmd key` over a flat list of arguments, in chunks (Lua's stack).
local function bulk(cmd, key, list)
  for i = 1, #list, 4000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
  end
end

local endpoints = {} -- endpoint id -> {tenant = string|false, strict = bool}, or false
local function endpoint(ep)
  local e = endpoints[ep]
  if e == nil then
    local f = redis.call('HMGET', k_ep(ep), 'enabled', 'tenant', 'strict')
    e = f[1] and {tenant = f[2], strict = f[3] == '1'} or false
    endpoints[ep] = e
  end
  return e
end

local counters = {}
local function next_of(key)
  local n = counters[key]
  if not n then n = tonumber(redis.call('GET', key)) or 0 end
  n = n + 1
  counters[key] = n
  return n
end

-- Event and delivery keys, as stored when the call starts (read in one go) and as
-- written by the call: ekey -> eseq, dkey -> seq.
local known_ekeys, known_dkeys = {}, {}
local ekey_list, dkey_list = {}, {}  -- flat field/value lists for K_EKEYS / K_DKEYS
local idx, idx_order = {}, {}        -- endpoint id -> its new index entries

local function enqueue(a)
  local now = a[1]
  local ekey, event_id = a[2], a[3]
  local has_tenant, tenant = a[4] == '1', a[5]
  local priority = a[9]
  local n = tonumber(a[11])
  for i = 0, n - 1 do
    local ep = a[12 + 2 * i]
    local e = endpoint(ep)
    if not e then return {'not_found', ep} end
    local same
    if has_tenant then same = e.tenant == tenant else same = not e.tenant end
    if not same then return {'invalid', ep} end
  end
  local fresh, existing, seen = {}, 0, {}
  for i = 0, n - 1 do
    local ep, dkey = a[12 + 2 * i], a[13 + 2 * i]
    if seen[dkey] or known_dkeys[dkey] then
      existing = existing + 1
    else
      seen[dkey] = true
      fresh[#fresh + 1] = {ep, dkey}
    end
  end
  if #fresh == 0 then return {'ok', 0, existing} end
  local eseq = known_ekeys[ekey]
  if not eseq then
    eseq = pad(next_of(K_ESEQ))
    local fields = {'id', event_id, 'ekey', ekey, 'created', a[8], 'priority', priority,
      'payload', a[10]}
    if has_tenant then
      fields[#fields + 1] = 'tenant'
      fields[#fields + 1] = tenant
    end
    if a[6] == '1' then
      fields[#fields + 1] = 'type'
      fields[#fields + 1] = a[7]
    end
    redis.call('HSET', k_ev(eseq), unpack(fields))
    known_ekeys[ekey] = eseq
    ekey_list[#ekey_list + 1] = ekey
    ekey_list[#ekey_list + 1] = eseq
  end
  local evd = {}
  for _, f in ipairs(fresh) do
    local ep, dkey = f[1], f[2]
    local seq = pad(next_of(K_SEQ))
    local fields = {'endpoint', ep, 'event', event_id, 'dkey', dkey, 'eseq', eseq,
      'state', 'pending', 'at', now, 'attempts', 0, 'priority', priority,
      'created', now, 'updated', now, 'token', 0}
    if has_tenant then
      fields[#fields + 1] = 'tenant'
      fields[#fields + 1] = tenant
    end
    redis.call('HSET', k_d(seq), unpack(fields))
    known_dkeys[dkey] = seq
    dkey_list[#dkey_list + 1] = dkey
    dkey_list[#dkey_list + 1] = seq
    evd[#evd + 1] = seq
    evd[#evd + 1] = seq
    local x = idx[ep]
    if not x then
      x = {unf = {}, epd = {}, rdy = {}, sched = {}}
      idx[ep] = x
      idx_order[#idx_order + 1] = ep
    end
    x.unf[#x.unf + 1] = seq
    x.unf[#x.unf + 1] = seq
    x.epd[#x.epd + 1] = seq
    if endpoint(ep).strict then
      x.sched[#x.sched + 1] = now
      x.sched[#x.sched + 1] = seq
      if not x.first or tonumber(now) < tonumber(x.first) then x.first = now end
    else
      -- Due at `now`: straight into the ready set (a claim with an earlier clock
      -- puts it back into the schedule).
      x.rdy[#x.rdy + 1] = -tonumber(priority)
      x.rdy[#x.rdy + 1] = rdy_member(now, seq)
    end
  end
  bulk('ZADD', k_evd(eseq), evd)
  return {'ok', #fresh, existing}
end

-- Values of `fields` in hash `key` (HMGET in chunks) into `into`.
local function lookup(key, fields, into)
  for i = 1, #fields, 4000 do
    local last = math.min(i + 3999, #fields)
    local got = redis.call('HMGET', key, unpack(fields, i, last))
    for j = i, last do
      local v = got[j - i + 1]
      if v then into[fields[j]] = v end
    end
  end
end

local events, ekeys, dkeys, i = {}, {}, {}, 3
for e = 1, tonumber(ARGV[2]) do
  local c = tonumber(ARGV[i])
  local a = {}
  for j = 1, c do a[j] = ARGV[i + j] end
  events[e] = a
  ekeys[#ekeys + 1] = a[2]
  for k = 0, tonumber(a[11]) - 1 do dkeys[#dkeys + 1] = a[13 + 2 * k] end
  i = i + c + 1
end
lookup(K_EKEYS, ekeys, known_ekeys)
lookup(K_DKEYS, dkeys, known_dkeys)
local out = {}
for e, a in ipairs(events) do out[e] = enqueue(a) end

for key, n in pairs(counters) do redis.call('SET', key, string.format('%d', n)) end
bulk('HSET', K_EKEYS, ekey_list)
bulk('HSET', K_DKEYS, dkey_list)
for _, ep in ipairs(idx_order) do
  local x = idx[ep]
  bulk('ZADD', k_unf(ep), x.unf)
  bulk('SADD', k_epd(ep), x.epd)
  -- What refresh would derive: the ready set or the schedule only gained entries.
  local added = 0
  if #x.rdy > 0 then
    bulk('ZADD', k_rdy(ep), x.rdy)
    added = redis.call('ZADD', K_DUE, READY_DUE, ep)
  end
  if #x.sched > 0 then
    bulk('ZADD', k_sched(ep), x.sched)
    added = added + redis.call('ZADD', K_DUE, 'LT', x.first, ep)
  end
  if added > 0 then redis.call('ZADD', K_ACTIVE, 0, ep) end
end
return out
