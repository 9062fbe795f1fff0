-- Shared by every script: key names, the record formats and index upkeep.
-- ARGV[1] is the store's prefix; every key lives under "<prefix>:".
-- Times are milliseconds since the epoch, passed in by the caller as strings.
local P = ARGV[1] .. ':'
local K_ENDPOINTS = P .. 'endpoints' -- zset, all scores 0: endpoint ids in byte order
local K_ACTIVE = P .. 'active'       -- zset, all scores 0: endpoints with unfinished work
local K_DUE = P .. 'due'             -- zset: the same endpoints by earliest claimable-at
local K_DEAD = P .. 'dead'           -- zset: dead delivery seqs by time of death
local K_DONE = P .. 'delivered'      -- zset: delivered delivery seqs by time of delivery
local K_DKEYS = P .. 'dkeys'         -- hash: encoded idempotency key -> delivery seq
local K_EKEYS = P .. 'ekeys'         -- hash: encoded (tenant, event id) -> event seq, then
                                     -- its delivery seqs (16 chars each, creation order)
local K_SEQ = P .. 'seq'             -- counter of delivery seqs (dispatch order)
local K_ESEQ = P .. 'eseq'           -- counter of event seqs
local K_CURSOR = P .. 'cursor'       -- the endpoint served last by claim
local K_DELETING = P .. 'deleting'   -- set: endpoints whose deletion has begun, not ended

local function k_ep(id) return P .. 'ep:' .. id end         -- hash: one endpoint
local function k_sched(id) return P .. 'sched:' .. id end   -- zset: unfinished seqs by claimable-at
local function k_unf(id) return P .. 'unf:' .. id end       -- zset: strict only: unfinished seqs by seq
local function k_rdy(id) return P .. 'rdy:' .. id end       -- zset: due seqs by priority, due time, seq
local function k_epd(id) return P .. 'epd:' .. id end       -- set: every seq of the endpoint
local function k_d(seq) return P .. 'd:' .. seq end         -- string: one delivery record
local function k_ev(eseq) return P .. 'ev:' .. eseq end     -- string: one event record, payload once

-- Seqs are zero-padded so that equal scores order members by seq.
local function pad(n) return string.format('%016d', n) end

-- A delivery record is one string, decoded by the Rust side (codec.rs), with a
-- fixed-width head so that scripts read and rewrite it with string.sub:
--   [1] state: p(ending) f (in flight) d(elivered) x (dead)
--   [2..18] at (next attempt, lease end, delivered/dead time), 17 chars ('%017d')
--   [19..34] lease token (16 digits)   [35..44] attempts (10 digits)
--   [45..61] updated (17)   [62..78] created (17)   [79..84] priority ('%06d')
--   [85..100] event seq (16)   [101..106] last status ('%06d', '------' for none)
--   [107] has error (0/1)   [108..117] error length (10 digits), then the error,
--   then the idempotency key's length (10 digits) and the key (JSON
--   [tenant, endpoint id, event id]), then the attempts, each as its length
--   (10 digits) and its JSON, oldest first.
-- An event record (written by the Rust side as is):
--   [1..17] created   [18..23] priority   [24..33] ekey length   [34] has type
--   [35..44] type length, then the ekey (JSON [tenant, event id]), the type and the
--   payload (the rest, raw bytes).
local function t17(ms) return string.format('%017d', tonumber(ms)) end
local function d_state(v) return string.sub(v, 1, 1) end
local function d_at(v) return tonumber(string.sub(v, 2, 18)) end
local function d_priority(v) return tonumber(string.sub(v, 79, 84)) end
local function d_eseq(v) return string.sub(v, 85, 100) end
-- Position of the idempotency key's length.
local function d_key_pos(v) return 118 + tonumber(string.sub(v, 108, 117)) end
local function d_dkey(v)
  local p = d_key_pos(v)
  return string.sub(v, p + 10, p + 9 + tonumber(string.sub(v, p, p + 9)))
end
-- The record without its attempts (which grow with every retry): its head, error and
-- key, all the Rust side reads of a claimed delivery.
local function d_without_attempts(v)
  local p = d_key_pos(v)
  return string.sub(v, 1, p + 9 + tonumber(string.sub(v, p, p + 9)))
end
-- The delivery's {tenant (false if none), endpoint id} from its key (cold paths only).
local function d_owner(v)
  local k = cjson.decode(d_dkey(v))
  local tenant = k[1]
  if tenant == cjson.null then tenant = false end
  return tenant, k[2]
end
-- v with its state, time, attempts and updated time replaced (all other parts kept).
local function d_with(v, state, at17, attempts, updated17)
  return state .. at17 .. string.sub(v, 19, 34) .. string.format('%010d', attempts) ..
    updated17 .. string.sub(v, 62)
end
-- The event record's ekey (from its head: GETRANGE, the payload stays in Redis). One
-- read covers the head and an ekey of up to 256 bytes; a longer one takes a second.
local function ev_ekey(eseq)
  local head = redis.call('GETRANGE', k_ev(eseq), 0, 299)
  if #head < 44 then return false end
  local len = tonumber(string.sub(head, 24, 33))
  if 44 + len <= #head then return string.sub(head, 45, 44 + len) end
  return redis.call('GETRANGE', k_ev(eseq), 44, 43 + len)
end

-- MGET of `keys` in chunks (Lua's stack): values (false when missing) by position.
local function mget(keys)
  local out = {}
  for i = 1, #keys, 4000 do
    local part = redis.call('MGET', unpack(keys, i, math.min(i + 3999, #keys)))
    for j = 1, #part do out[i + j - 1] = part[j] end
  end
  return out
end

-- HMGET of `fields` in hash `key` in chunks: values (false when missing) by position.
local function hmget(key, fields)
  local out = {}
  for i = 1, #fields, 4000 do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(i + 3999, #fields)))
    for j = 1, #part do out[i + j - 1] = part[j] end
  end
  return out
end

-- Bulk command `cmd key` over a flat list of arguments (key nil: `cmd` alone), in
-- chunks (Lua's stack).
local function bulk(cmd, key, list)
  for i = 1, #list, 4000 do
    if key then
      redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
    else
      redis.call(cmd, unpack(list, i, math.min(i + 3999, #list)))
    end
  end
end

-- The K_DUE score of an endpoint with promoted (ready) work: below any real time.
local READY_DUE = -9e15

-- A time (ms) as a string that sorts like the number (negative times included).
local function enc_at(at)
  local n = tonumber(at)
  if n < 0 then return '0' .. string.format('%016d', 9e15 + n) end
  return '1' .. string.format('%016d', n)
end

-- The member of k_rdy for a delivery due at `at` (score: -priority), so that equal
-- priorities sort by due time, then by seq. The seq is the last 16 characters.
local function rdy_member(at, seq) return enc_at(at) .. seq end

-- Re-derives the endpoint's place in K_ACTIVE / K_DUE from its schedule and its
-- ready set (an endpoint with ready work is always due).
local function refresh(ep)
  if redis.call('EXISTS', k_rdy(ep)) == 1 then
    redis.call('ZADD', K_DUE, READY_DUE, ep)
    redis.call('ZADD', K_ACTIVE, 0, ep)
    return
  end
  local first = redis.call('ZRANGE', k_sched(ep), 0, 0, 'WITHSCORES')
  if first[1] then
    redis.call('ZADD', K_DUE, first[2], ep)
    redis.call('ZADD', K_ACTIVE, 0, ep)
  else
    redis.call('ZREM', K_DUE, ep)
    redis.call('ZREM', K_ACTIVE, ep)
  end
end

-- Deletes deliveries (their attempts are in their records) and their index entries,
-- and each event left without deliveries, with one command per index rather than per
-- delivery. Each event's delivery list is rewritten once per call, however many of
-- its deliveries go: removing all N deliveries of an event costs O(N), not O(N^2).
-- The caller refreshes endpoints if needed. Returns whether each seq was found, by
-- position.
local function remove_deliveries(seqs)
  local keys = {}
  for i, seq in ipairs(seqs) do keys[i] = k_d(seq) end
  local vals = mget(keys)
  local found, records, removed, dkeys = {}, {}, {}, {}
  local per_ep, ep_order = {}, {}   -- endpoint -> its ready-set members and seqs
  local gone, ev_order = {}, {}     -- eseq -> set of its removed seqs
  for i, seq in ipairs(seqs) do
    local v = vals[i]
    found[i] = v and true or false
    if v then
      records[#records + 1] = keys[i]
      removed[#removed + 1] = seq
      dkeys[#dkeys + 1] = d_dkey(v)
      local _, ep = d_owner(v)
      local e = per_ep[ep]
      if not e then
        e = {rdy = {}, seqs = {}}
        per_ep[ep] = e
        ep_order[#ep_order + 1] = ep
      end
      e.rdy[#e.rdy + 1] = rdy_member(d_at(v), seq)
      e.seqs[#e.seqs + 1] = seq
      local eseq = d_eseq(v)
      if not gone[eseq] then
        gone[eseq] = {}
        ev_order[#ev_order + 1] = eseq
      end
      gone[eseq][seq] = true
    end
  end
  if #records == 0 then return found end
  bulk('HDEL', K_DKEYS, dkeys)
  bulk('ZREM', K_DEAD, removed)
  bulk('ZREM', K_DONE, removed)
  bulk('DEL', nil, records)
  for _, ep in ipairs(ep_order) do
    local e = per_ep[ep]
    bulk('ZREM', k_sched(ep), e.seqs)
    bulk('ZREM', k_rdy(ep), e.rdy)
    bulk('ZREM', k_unf(ep), e.seqs)
    bulk('SREM', k_epd(ep), e.seqs)
  end
  local ekeys, fields = {}, {}
  for i, eseq in ipairs(ev_order) do
    ekeys[i] = ev_ekey(eseq)
    if ekeys[i] then fields[#fields + 1] = ekeys[i] end
  end
  local lists = hmget(K_EKEYS, fields)
  local drop_fields, drop_events, keep, f = {}, {}, {}, 0
  for i, eseq in ipairs(ev_order) do
    local ekey, list = ekeys[i], ''
    if ekey then
      f = f + 1
      list = lists[f] or ''
    end
    local out, left = gone[eseq], {}
    for j = 17, #list, 16 do
      local s = string.sub(list, j, j + 15)
      if not out[s] then left[#left + 1] = s end
    end
    if #left == 0 then
      if ekey then drop_fields[#drop_fields + 1] = ekey end
      drop_events[#drop_events + 1] = k_ev(eseq)
    else
      keep[#keep + 1] = ekey
      keep[#keep + 1] = eseq .. table.concat(left)
    end
  end
  bulk('HDEL', K_EKEYS, drop_fields)
  bulk('DEL', nil, drop_events)
  bulk('HSET', K_EKEYS, keep)
  return found
end

-- Moves a dead delivery (record `v`) back to pending at `now`, with a fresh attempt
-- budget.
local function replay(seq, v, now)
  local _, ep = d_owner(v)
  local now17 = t17(now)
  redis.call('SET', k_d(seq), d_with(v, 'p', now17, 0, now17))
  redis.call('ZREM', K_DEAD, seq)
  redis.call('ZADD', k_sched(ep), now, seq)
  if redis.call('HGET', k_ep(ep), 'strict') == '1' then
    redis.call('ZADD', k_unf(ep), seq, seq)
  end
  refresh(ep)
end

-- Whether the delivery record `v` belongs to `tenant` (has_tenant false: no tenant).
local function tenant_is(v, has_tenant, tenant)
  local t = d_owner(v)
  if has_tenant then return t == tenant end
  return not t
end
