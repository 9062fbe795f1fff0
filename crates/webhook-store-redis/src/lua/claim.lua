-- claim: ARGV = prefix, now, lease_until, limit, per_endpoint_limit, n, then n pairs
-- (endpoint id, limit) overriding the per-endpoint limit (0 skips the endpoint).
-- Serves endpoints round-robin in id order, starting after the one served last.
-- Returns { {seq, delivery fields, event fields (payload included)}, ... }.
local now_s, until_s = ARGV[2], ARGV[3]
local now = tonumber(now_s)
local limit = tonumber(ARGV[4])
local default_max = tonumber(ARGV[5])
local overrides = {}
for i = 0, tonumber(ARGV[6]) - 1 do
  overrides[ARGV[7 + 2 * i]] = tonumber(ARGV[8 + 2 * i])
end
local out = {}
if limit <= 0 then return out end
local due = redis.call('ZCOUNT', K_DUE, '-inf', now_s)
if due == 0 then return out end
local events = {}

-- Most schedule entries promoted into an endpoint's ready set per visit (at least the
-- endpoint's limit), so that a claim's cost does not grow with the backlog.
local PROMOTE = 1024

-- Schedule entries of the endpoint being served (lease ends), written in one go.
local leased = {}

-- Claims the delivery `seq` of `ep` if it is pending (or its lease expired) and due.
-- `h` is its HGETALL reply. Returns whether it was claimed.
local function take(ep, seq, h)
  local f = {}
  for i = 1, #h, 2 do f[h[i]] = i + 1 end
  local st = f.state and h[f.state]
  if not (st == 'pending' or st == 'in_flight') or tonumber(h[f.at]) > now then
    return false
  end
  local token = tostring((tonumber(f.token and h[f.token]) or 0) + 1)
  local d = k_d(seq)
  redis.call('HSET', d, 'token', token, 'state', 'in_flight', 'at', until_s, 'updated', now_s)
  h[f.state], h[f.at], h[f.updated] = 'in_flight', until_s, now_s
  if f.token then h[f.token] = token else h[#h + 1] = 'token'; h[#h + 1] = token end
  leased[#leased + 1] = until_s
  leased[#leased + 1] = seq
  local eseq = h[f.eseq]
  if not events[eseq] then events[eseq] = redis.call('HGETALL', k_ev(eseq)) end
  out[#out + 1] = {seq, h, events[eseq]}
  return true
end

local function serve(ep)
  local max = overrides[ep] or default_max
  if max > limit - #out then max = limit - #out end
  if max <= 0 then return end
  local info = redis.call('HMGET', k_ep(ep), 'enabled', 'strict')
  if info[1] ~= '1' then return end
  local got = 0
  local rdy = k_rdy(ep)
  if info[2] == '1' then
    -- Strict ordering: only the oldest unfinished delivery, when it is claimable
    -- (wherever it is indexed: the schedule, or the ready set).
    local head = redis.call('ZRANGE', k_unf(ep), 0, 0)[1]
    if head then
      local h = redis.call('HGETALL', k_d(head))
      local at
      for i = 1, #h, 2 do if h[i] == 'at' then at = h[i + 1] end end
      if at and take(ep, head, h) then
        redis.call('ZREM', rdy, rdy_member(at, head))
        got = 1
      end
    end
  else
    -- Promotes due schedule entries into the ready set (by priority, due time, seq).
    local sched = k_sched(ep)
    local promo = redis.call('ZRANGEBYSCORE', sched, '-inf', now_s, 'LIMIT', 0,
      math.max(max, PROMOTE))
    if #promo > 0 then
      local add, j = {}, 0
      for _, seq in ipairs(promo) do
        local f = redis.call('HMGET', k_d(seq), 'priority', 'at')
        add[j + 1] = -(tonumber(f[1]) or 0)
        add[j + 2] = rdy_member(f[2] or now_s, seq)
        j = j + 2
      end
      for i = 1, #add, 4000 do
        redis.call('ZADD', rdy, unpack(add, i, math.min(i + 3999, #add)))
      end
      for i = 1, #promo, 4000 do
        redis.call('ZREM', sched, unpack(promo, i, math.min(i + 3999, #promo)))
      end
    end
    -- Takes from the head of the ready set; entries seen due by a claim with a later
    -- clock go back to the schedule, stale ones are dropped.
    local budget = math.max(max, PROMOTE)
    while got < max and budget > 0 do
      local members = redis.call('ZRANGE', rdy, 0, math.min(max - got, budget) - 1)
      if #members == 0 then break end
      budget = budget - #members
      for _, m in ipairs(members) do
        local seq = string.sub(m, -16)
        local h = redis.call('HGETALL', k_d(seq))
        local at
        for i = 1, #h, 2 do if h[i] == 'at' then at = h[i + 1] end end
        if at and rdy_member(at, seq) == m and tonumber(at) > now then
          redis.call('ZADD', sched, at, seq)
        elseif at and rdy_member(at, seq) == m and take(ep, seq, h) then
          got = got + 1
        end
      end
      for i = 1, #members, 4000 do
        redis.call('ZREM', rdy, unpack(members, i, math.min(i + 3999, #members)))
      end
    end
  end
  for i = 1, #leased, 4000 do
    redis.call('ZADD', k_sched(ep), unpack(leased, i, math.min(i + 3999, #leased)))
  end
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
        if #out >= limit or seen >= due then return true end
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
return out
