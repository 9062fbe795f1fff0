-- Shared by every script: key names and index upkeep.
-- ARGV[1] is the store's prefix; every key lives under "<prefix>:".
-- Times are milliseconds since the epoch, passed in by the caller as strings and
-- stored as given (Lua never formats a timestamp).
local P = ARGV[1] .. ':'
local K_ENDPOINTS = P .. 'endpoints' -- zset, all scores 0: endpoint ids in byte order
local K_ACTIVE = P .. 'active'       -- zset, all scores 0: endpoints with unfinished work
local K_DUE = P .. 'due'             -- zset: the same endpoints by earliest claimable-at
local K_DEAD = P .. 'dead'           -- zset: dead delivery seqs by time of death
local K_DONE = P .. 'delivered'      -- zset: delivered delivery seqs by time of delivery
local K_DKEYS = P .. 'dkeys'         -- hash: encoded idempotency key -> delivery seq
local K_EKEYS = P .. 'ekeys'         -- hash: encoded (tenant, event id) -> event seq
local K_SEQ = P .. 'seq'             -- counter of delivery seqs (dispatch order)
local K_ESEQ = P .. 'eseq'           -- counter of event seqs
local K_CURSOR = P .. 'cursor'       -- the endpoint served last by claim

local function k_ep(id) return P .. 'ep:' .. id end         -- hash: one endpoint
local function k_sched(id) return P .. 'sched:' .. id end   -- zset: unfinished seqs by claimable-at
local function k_unf(id) return P .. 'unf:' .. id end       -- zset: unfinished seqs by seq
local function k_rdy(id) return P .. 'rdy:' .. id end       -- zset: due seqs by priority, due time, seq
local function k_epd(id) return P .. 'epd:' .. id end       -- set: every seq of the endpoint
local function k_d(seq) return P .. 'd:' .. seq end         -- hash: one delivery
local function k_att(seq) return P .. 'att:' .. seq end     -- list: its attempts (JSON)
local function k_ev(eseq) return P .. 'ev:' .. eseq end     -- hash: one event, payload once
local function k_evd(eseq) return P .. 'evd:' .. eseq end   -- zset: the event's seqs

-- Seqs are zero-padded so that equal scores order members by seq.
local function pad(n) return string.format('%016d', n) end

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

-- Deletes one delivery, its attempts and its index entries, and its event when it
-- was the event's last delivery. The caller refreshes the endpoint if needed.
local function remove_delivery(seq)
  local d = k_d(seq)
  local f = redis.call('HMGET', d, 'endpoint', 'dkey', 'eseq', 'at')
  if not f[1] then return false end
  local ep, dkey, eseq = f[1], f[2], f[3]
  redis.call('HDEL', K_DKEYS, dkey)
  redis.call('ZREM', k_sched(ep), seq)
  if f[4] then redis.call('ZREM', k_rdy(ep), rdy_member(f[4], seq)) end
  redis.call('ZREM', k_unf(ep), seq)
  redis.call('SREM', k_epd(ep), seq)
  redis.call('ZREM', K_DEAD, seq)
  redis.call('ZREM', K_DONE, seq)
  redis.call('DEL', d, k_att(seq))
  redis.call('ZREM', k_evd(eseq), seq)
  if redis.call('ZCARD', k_evd(eseq)) == 0 then
    local ekey = redis.call('HGET', k_ev(eseq), 'ekey')
    if ekey then redis.call('HDEL', K_EKEYS, ekey) end
    redis.call('DEL', k_ev(eseq), k_evd(eseq))
  end
  return true
end

-- Moves a dead delivery back to pending at `now`, with a fresh attempt budget.
local function replay(seq, now)
  local d = k_d(seq)
  local ep = redis.call('HGET', d, 'endpoint')
  redis.call('HSET', d, 'state', 'pending', 'at', now, 'attempts', 0, 'updated', now)
  redis.call('ZREM', K_DEAD, seq)
  redis.call('ZADD', k_sched(ep), now, seq)
  redis.call('ZADD', k_unf(ep), seq, seq)
  refresh(ep)
end

-- Whether the delivery hash `d` belongs to `tenant` (has_tenant false: no tenant).
local function tenant_is(d, has_tenant, tenant)
  local t = redis.call('HGET', d, 'tenant')
  if has_tenant then return t == tenant end
  return not t
end
