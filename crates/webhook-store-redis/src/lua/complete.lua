-- complete: ARGV = prefix, now, n, then n groups of 9:
--   dkey, lease token, kind (delivered|dead|retry|defer), at (retry/defer: when due),
--   has_attempt (0/1), attempt JSON, status ('' for none), has_error (0/1), error.
-- Each is applied only if the delivery is in flight under that token.
-- Returns one 1 (applied) or 0 (lease lost) per group.
-- The script is atomic, so index updates are gathered and written at the end, one
-- command per index (a delivery is applied at most once per call: once applied it is
-- no longer in flight).
local now = ARGV[2]
local n = tonumber(ARGV[3])

local function bulk(cmd, key, list)
  for i = 1, #list, 4000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
  end
end

local dkeys = {}
for i = 0, n - 1 do dkeys[i + 1] = ARGV[4 + 9 * i] end
local seqs = {}
for i = 1, n, 4000 do
  local part = redis.call('HMGET', K_DKEYS, unpack(dkeys, i, math.min(i + 3999, n)))
  for j = 1, #part do seqs[i + j - 1] = part[j] end
end

local res = {}
local idx, order = {}, {}
local dead, done = {}, {}
for i = 0, n - 1 do
  local b = 3 + 9 * i
  local token, kind, at = ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
  local seq = seqs[i + 1]
  local applied = 0
  if seq then
    local d = k_d(seq)
    local f = redis.call('HMGET', d, 'state', 'token', 'endpoint', 'at', 'attempts', 'status',
      'error')
    if f[1] == 'in_flight' and f[2] == token then
      local ep = f[3]
      local x = idx[ep]
      if not x then
        x = {rdy = {}, sched_rem = {}, sched_add = {}, unf = {}}
        idx[ep] = x
        order[#order + 1] = ep
      end
      -- A delivery whose lease expired may have been promoted to the ready set.
      if f[4] then x.rdy[#x.rdy + 1] = rdy_member(f[4], seq) end
      local set, del = {}, {}
      if ARGV[b + 5] == '1' then
        set[#set + 1] = 'attempts'
        set[#set + 1] = (tonumber(f[5]) or 0) + 1
        if ARGV[b + 7] ~= '' then
          set[#set + 1] = 'status'
          set[#set + 1] = ARGV[b + 7]
        elseif f[6] then
          del[#del + 1] = 'status'
        end
        if ARGV[b + 8] == '1' then
          set[#set + 1] = 'error'
          set[#set + 1] = ARGV[b + 9]
        elseif f[7] then
          del[#del + 1] = 'error'
        end
        redis.call('RPUSH', k_att(seq), ARGV[b + 6])
      end
      local state, when = 'pending', at
      if kind == 'delivered' or kind == 'dead' then
        state, when = kind, now
        x.sched_rem[#x.sched_rem + 1] = seq
        x.unf[#x.unf + 1] = seq
        local to = kind == 'dead' and dead or done
        to[#to + 1] = now
        to[#to + 1] = seq
      else
        x.sched_add[#x.sched_add + 1] = at
        x.sched_add[#x.sched_add + 1] = seq
      end
      set[#set + 1] = 'state'
      set[#set + 1] = state
      set[#set + 1] = 'at'
      set[#set + 1] = when
      set[#set + 1] = 'updated'
      set[#set + 1] = now
      redis.call('HSET', d, unpack(set))
      if #del > 0 then redis.call('HDEL', d, unpack(del)) end
      applied = 1
    end
  end
  res[#res + 1] = applied
end

bulk('ZADD', K_DEAD, dead)
bulk('ZADD', K_DONE, done)
for _, ep in ipairs(order) do
  local x = idx[ep]
  bulk('ZREM', k_rdy(ep), x.rdy)
  bulk('ZREM', k_sched(ep), x.sched_rem)
  bulk('ZADD', k_sched(ep), x.sched_add)
  bulk('ZREM', k_unf(ep), x.unf)
  refresh(ep)
end
return res
