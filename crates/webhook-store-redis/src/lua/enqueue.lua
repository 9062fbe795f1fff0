-- enqueue: ARGV = prefix, m, then m events, each as a count c and c arguments:
--   now, ekey, has_tenant, tenant, priority, event record (see common.lua), n, then
--   n pairs (endpoint id, dkey).
-- Each event is enqueued on its own, as if by its own call in turn. Returns three
-- values per event, flat: 'not_found', id, 0 or 'invalid', id, 0 having written
-- nothing for that event, or 'ok', created, existing.
-- The script is atomic, so the records and index entries of the whole batch are
-- written together at the end (one command per key kind or index), and the counters
-- are read once and set once.

local endpoints = {} -- endpoint id -> {tenant = string|false, strict = bool}, or false
local function endpoint(ep)
  local e = endpoints[ep]
  if e == nil then
    local f = redis.call('HMGET', k_ep(ep), 'enabled', 'tenant', 'strict', 'deleting')
    e = f[1] and not f[4] and {tenant = f[2], strict = f[3] == '1'} or false
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

-- Event and delivery keys, as stored when the call starts (read in one go):
-- ekey -> eseq and delivery seqs, dkey -> seq. Those the call writes: ekey -> the
-- event's seqs (first its eseq, then its delivery seqs) and dkey -> seq.
local known_ekeys, known_dkeys = {}, {}
local ekey_seqs, ekey_order = {}, {} -- ekeys the call writes, in first-use order
local ekey_prio = {}                 -- ekey -> the event's priority (as stored)
local dkey_list = {}                 -- flat field/value list for K_DKEYS
local records = {}                   -- flat key/value list for MSET
local idx, idx_order = {}, {}        -- endpoint id -> its new index entries

-- What depends on `now` only (usually the same for a whole batch): the head of a new
-- record up to its priority, and the prefix of its ready-set member.
local nows = {}
local function at_now(now)
  local t = nows[now]
  if not t then
    local now17 = t17(now)
    -- The first lease token is the creation time in microseconds (see Delivery).
    t = {head = 'p' .. now17 .. pad(tonumber(now) * 1000) .. '0000000000' .. now17 .. now17,
      rdy = enc_at(now)}
    nows[now] = t
  end
  return t
end

-- What depends on the priority only: its record field and its ready-set score.
local prios = {}
local function prio(priority)
  local p = prios[priority]
  if not p then
    local n = tonumber(priority)
    p = {field = string.format('%06d', n), score = string.format('%d', -n)}
    prios[priority] = p
  end
  return p
end

local fresh, seen = {}, {} -- reused by every event: positions of new dkeys, dkeys seen

-- Enqueues the event whose arguments follow ARGV[o] (a[k] is ARGV[o + k]); returns
-- its status and two values.
local function enqueue(o)
  local now, ekey = ARGV[o + 1], ARGV[o + 2]
  local has_tenant, tenant = ARGV[o + 3] == '1', ARGV[o + 4]
  local n = tonumber(ARGV[o + 7])
  for i = o + 8, o + 6 + 2 * n, 2 do
    local ep = ARGV[i]
    local e = endpoint(ep)
    if not e then return 'not_found', ep end
    local same
    if has_tenant then same = e.tenant == tenant else same = not e.tenant end
    if not same then return 'invalid', ep end
  end
  local created, existing = 0, 0
  for i = o + 9, o + 7 + 2 * n, 2 do
    local dkey = ARGV[i]
    if known_dkeys[dkey] or (n > 1 and seen[dkey]) then
      existing = existing + 1
    else
      if n > 1 then seen[dkey] = true end
      created = created + 1
      fresh[created] = i
    end
  end
  if n > 1 then seen = {} end
  if created == 0 then return 'ok', 0, existing end
  -- Deliveries take the event's priority: the stored event's when it exists.
  local seqs = ekey_seqs[ekey]
  local eseq
  if seqs then
    eseq = string.sub(seqs[1], 1, 16)
  else
    local stored = known_ekeys[ekey]
    if stored then
      eseq = string.sub(stored, 1, 16)
      -- The event record's priority field ([18..23], '%06d'); a record gone
      -- missing (see claim) leaves the caller's.
      local stored_priority = redis.call('GETRANGE', k_ev(eseq), 17, 22)
      if tonumber(stored_priority) then ekey_prio[ekey] = stored_priority end
    else
      ekey_prio[ekey] = ARGV[o + 5]
      eseq = pad(next_of(K_ESEQ))
      stored = eseq
      records[#records + 1] = k_ev(eseq)
      records[#records + 1] = ARGV[o + 6]
    end
    seqs = {stored}
    ekey_seqs[ekey] = seqs
    ekey_order[#ekey_order + 1] = ekey
  end
  -- Every new record of this event: pending at `now`, no attempts yet, its priority
  -- and event seq, no status and no error, its key.
  local t, p = at_now(now), prio(ekey_prio[ekey] or ARGV[o + 5])
  for j = 1, created do
    local i = fresh[j]
    local ep, dkey = ARGV[i - 1], ARGV[i]
    local seq = pad(next_of(K_SEQ))
    records[#records + 1] = k_d(seq)
    records[#records + 1] = t.head .. p.field .. eseq .. '------00000000000' ..
      string.format('%010d', #dkey) .. dkey
    known_dkeys[dkey] = seq
    dkey_list[#dkey_list + 1] = dkey
    dkey_list[#dkey_list + 1] = seq
    seqs[#seqs + 1] = seq
    local x = idx[ep]
    if not x then
      x = {unf = {}, epd = {}, rdy = {}, sched = {}}
      idx[ep] = x
      idx_order[#idx_order + 1] = ep
    end
    x.epd[#x.epd + 1] = seq
    if endpoint(ep).strict then
      -- Strict ordering: the schedule, and the dispatch order whose head is claimable.
      x.unf[#x.unf + 1] = seq
      x.unf[#x.unf + 1] = seq
      x.sched[#x.sched + 1] = now
      x.sched[#x.sched + 1] = seq
      if not x.first or tonumber(now) < tonumber(x.first) then x.first = now end
    else
      -- Due at `now`: straight into the ready set (a claim with an earlier clock
      -- puts it back into the schedule).
      x.rdy[#x.rdy + 1] = p.score
      x.rdy[#x.rdy + 1] = t.rdy .. seq
    end
  end
  return 'ok', created, existing
end

-- Values of `fields` in hash `key` (HMGET in chunks) into `into`.
local function lookup(key, fields, into)
  local got = hmget(key, fields)
  for j, field in ipairs(fields) do
    if got[j] then into[field] = got[j] end
  end
end

local events, ekeys, dkeys, i = {}, {}, {}, 3
for e = 1, tonumber(ARGV[2]) do
  events[e] = i
  ekeys[e] = ARGV[i + 2]
  for k = i + 9, i + 7 + 2 * tonumber(ARGV[i + 7]), 2 do dkeys[#dkeys + 1] = ARGV[k] end
  i = i + tonumber(ARGV[i]) + 1
end
lookup(K_EKEYS, ekeys, known_ekeys)
lookup(K_DKEYS, dkeys, known_dkeys)
local out = {}
for _, o in ipairs(events) do
  local status, x, y = enqueue(o)
  out[#out + 1] = status
  out[#out + 1] = x
  out[#out + 1] = y or 0
end

for key, n in pairs(counters) do redis.call('SET', key, string.format('%d', n)) end
local ekey_list = {}
for _, ekey in ipairs(ekey_order) do
  ekey_list[#ekey_list + 1] = ekey
  ekey_list[#ekey_list + 1] = table.concat(ekey_seqs[ekey])
end
bulk('MSET', nil, records)
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
