-- claim: ARGV = prefix, now, lease_until, limit, per_endpoint_limit, n, then n pairs
-- (endpoint id, limit) overriding the per-endpoint limit (0 skips the endpoint).
-- Serves endpoints round-robin in id order, starting after the one served last.
-- Returns {claimed, events}: claimed is flat, a delivery record (as written, without
-- its attempts) then the 1-based index of its event record (payload included) in
-- events, per claim.
local now_s, until_s = ARGV[2], ARGV[3]
local now = tonumber(now_s)
local now17, until17 = t17(now_s), t17(until_s)
local limit = tonumber(ARGV[4])
local default_max = tonumber(ARGV[5])
local overrides = {}
for i = 0, tonumber(ARGV[6]) - 1 do
  overrides[ARGV[7 + 2 * i]] = tonumber(ARGV[8 + 2 * i])
end
local out, events = {}, {}
local claimed = 0
if limit <= 0 then return {out, events} end
local due = redis.call('ZCOUNT', K_DUE, '-inf', now_s)
if due == 0 then return {out, events} end
local event_index = {} -- eseq -> index in events (records fetched at the end)

-- Most schedule entries promoted into an endpoint's ready set per visit (at least the
-- endpoint's limit), so that a claim's cost does not grow with the backlog.
local PROMOTE = 1024

-- Of the endpoint being served: schedule entries (lease ends) and rewritten records,
-- written in one go.
local leased, writes = {}, {}

-- Whether the record `v` is claimable now: pending or in flight (an expired lease), due.
local function claimable(v)
  local st = d_state(v)
  return (st == 'p' or st == 'f') and d_at(v) <= now
end

-- Claims the delivery `seq` (record `v` under key `key`, claimable).
local function take(seq, key, v)
  local token = string.format('%016d', tonumber(string.sub(v, 19, 34)) + 1)
  local nv = 'f' .. until17 .. token .. string.sub(v, 35, 44) .. now17 .. string.sub(v, 62)
  writes[#writes + 1] = key
  writes[#writes + 1] = nv
  leased[#leased + 1] = until_s
  leased[#leased + 1] = seq
  local eseq = d_eseq(v)
  local e = event_index[eseq]
  if not e then
    events[#events + 1] = eseq
    e = #events
    event_index[eseq] = e
  end
  out[#out + 1] = d_without_attempts(nv)
  out[#out + 1] = e
  claimed = claimed + 1
end

local function serve(ep)
  local max = overrides[ep] or default_max
  if max > limit - claimed then max = limit - claimed end
  if max <= 0 then return end
  local info = redis.call('HMGET', k_ep(ep), 'enabled', 'strict')
  if info[1] ~= '1' then return end
  local got = 0
  local rdy = k_rdy(ep)
  local sched = k_sched(ep)
  if info[2] == '1' then
    -- Strict ordering: only the oldest unfinished delivery, when it is claimable
    -- (wherever it is indexed: the schedule, or the ready set).
    local head = redis.call('ZRANGE', k_unf(ep), 0, 0)[1]
    if head then
      local key = k_d(head)
      local v = redis.call('GET', key)
      if v and claimable(v) then
        redis.call('ZREM', rdy, rdy_member(d_at(v), head))
        take(head, key, v)
        got = 1
      end
    end
  else
    -- Promotes due schedule entries into the ready set (by priority, due time, seq).
    local promo = redis.call('ZRANGEBYSCORE', sched, '-inf', now_s, 'LIMIT', 0,
      math.max(max, PROMOTE))
    if #promo > 0 then
      local keys = {}
      for i, seq in ipairs(promo) do keys[i] = k_d(seq) end
      local vals = mget(keys)
      local add = {}
      for i, seq in ipairs(promo) do
        local v = vals[i]
        if v then
          add[#add + 1] = -d_priority(v)
          add[#add + 1] = rdy_member(d_at(v), seq)
        end
      end
      bulk('ZADD', rdy, add)
      bulk('ZREM', sched, promo)
    end
    -- Takes from the head of the ready set; entries seen due by a claim with a later
    -- clock go back to the schedule, stale ones are dropped.
    local budget = math.max(max, PROMOTE)
    while got < max and budget > 0 do
      local members = redis.call('ZRANGE', rdy, 0, math.min(max - got, budget) - 1)
      if #members == 0 then break end
      budget = budget - #members
      local keys, seqs = {}, {}
      for i, m in ipairs(members) do
        seqs[i] = string.sub(m, -16)
        keys[i] = k_d(seqs[i])
      end
      local vals = mget(keys)
      local back = {}
      for i, m in ipairs(members) do
        local v, seq = vals[i], seqs[i]
        local st = v and d_state(v)
        if st == 'p' or st == 'f' then
          local at = d_at(v)
          if rdy_member(at, seq) == m then
            if at > now then
              back[#back + 1] = at
              back[#back + 1] = seq
            else
              take(seq, keys[i], v)
              got = got + 1
            end
          end
        end
      end
      bulk('ZREM', rdy, members)
      bulk('ZADD', sched, back)
      -- Written before the next batch is read (a record is taken at most once).
      bulk('MSET', nil, writes)
      writes = {}
    end
  end
  bulk('MSET', nil, writes)
  writes = {}
  bulk('ZADD', sched, leased)
  leased = {}
  refresh(ep)
  if got > 0 then
    redis.call('SET', K_CURSOR, ep)
  end
end

-- Visits the active endpoints in (min, max] byte order; true once done.
local seen = 0
local function scan(min, max)
  while true do
    local batch = redis.call('ZRANGEBYLEX', K_ACTIVE, min, max, 'LIMIT', 0, 256)
    for _, ep in ipairs(batch) do
      local at = redis.call('ZSCORE', K_DUE, ep)
      if at and tonumber(at) <= now then
        seen = seen + 1
        serve(ep)
        if claimed >= limit or seen >= due then return true end
      end
    end
    if #batch < 256 then return false end
    min = '(' .. batch[#batch]
  end
end

local cursor = redis.call('GET', K_CURSOR)
if cursor then
  if not scan('(' .. cursor, '+') then scan('-', '[' .. cursor) end
else
  scan('-', '+')
end

-- The events of the claimed deliveries, each once.
local keys = {}
for i, eseq in ipairs(events) do keys[i] = k_ev(eseq) end
events = mget(keys)
return {out, events}
