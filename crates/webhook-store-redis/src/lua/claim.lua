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

local function serve(ep)
  local max = overrides[ep] or default_max
  if max > limit - #out then max = limit - #out end
  if max <= 0 then return end
  local info = redis.call('HMGET', k_ep(ep), 'enabled', 'strict')
  if info[1] ~= '1' then return end
  local seqs
  if info[2] == '1' then
    -- Strict ordering: only the oldest unfinished delivery, when it is claimable.
    seqs = {}
    local head = redis.call('ZRANGE', k_unf(ep), 0, 0)[1]
    if head then
      local at = redis.call('ZSCORE', k_sched(ep), head)
      if at and tonumber(at) <= now then seqs[1] = head end
    end
  else
    seqs = redis.call('ZRANGEBYSCORE', k_sched(ep), '-inf', now_s, 'LIMIT', 0, max)
  end
  local got = 0
  for _, seq in ipairs(seqs) do
    local d = k_d(seq)
    local st = redis.call('HMGET', d, 'state', 'at', 'eseq')
    if (st[1] == 'pending' or st[1] == 'in_flight') and tonumber(st[2]) <= now then
      redis.call('HINCRBY', d, 'token', 1)
      redis.call('HSET', d, 'state', 'in_flight', 'at', until_s, 'updated', now_s)
      redis.call('ZADD', k_sched(ep), until_s, seq)
      local eseq = st[3]
      if not events[eseq] then events[eseq] = redis.call('HGETALL', k_ev(eseq)) end
      out[#out + 1] = {seq, redis.call('HGETALL', d), events[eseq]}
      got = got + 1
    end
  end
  if got > 0 then
    refresh(ep)
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
