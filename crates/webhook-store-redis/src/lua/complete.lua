-- complete: ARGV = prefix, now, n, then n groups of 9:
--   dkey, endpoint id (the key's), lease token (16 digits), kind
--   (delivered|dead|retry|defer), at (retry/defer: when due), has_attempt (0/1),
--   status (6 chars, as in the record), error part (has error, length, error: as in
--   the record), attempt (length and JSON: as in the record).
-- Each is applied only if the delivery is in flight under that token.
-- Returns one 1 (applied) or 0 (lease lost) per group.
-- The script is atomic, so records and index updates are gathered and written at the
-- end, one command per index (a delivery is applied at most once per call: once
-- applied it is no longer in flight).
local now = ARGV[2]
local now17 = t17(now)
local n = tonumber(ARGV[3])

local dkeys = {}
for i = 0, n - 1 do dkeys[i + 1] = ARGV[4 + 9 * i] end
local seqs = hmget(K_DKEYS, dkeys)
local keys, found = {}, {}
for i = 1, n do
  if seqs[i] then
    keys[#keys + 1] = k_d(seqs[i])
    found[#found + 1] = i
  end
end
local current = {} -- seq -> its record, as read and as rewritten by this call
local vals = mget(keys)
for j, i in ipairs(found) do
  if vals[j] then current[seqs[i]] = vals[j] end
end

local res = {}
local idx, order = {}, {}
local dead, done, writes = {}, {}, {}
for i = 0, n - 1 do
  local b = 3 + 9 * i
  local ep, token, kind, at = ARGV[b + 2], ARGV[b + 3], ARGV[b + 4], ARGV[b + 5]
  local seq = seqs[i + 1]
  local v = seq and current[seq]
  local applied = 0
  if v and d_state(v) == 'f' and string.sub(v, 19, 34) == token then
    local x = idx[ep]
    if not x then
      x = {rdy = {}, sched_rem = {}, sched_add = {}, unf = {}}
      idx[ep] = x
      order[#order + 1] = ep
    end
    -- A delivery whose lease expired may have been promoted to the ready set.
    x.rdy[#x.rdy + 1] = rdy_member(d_at(v), seq)
    local state, when = 'p', at
    if kind == 'delivered' or kind == 'dead' then
      state, when = kind == 'dead' and 'x' or 'd', now
      x.sched_rem[#x.sched_rem + 1] = seq
      x.unf[#x.unf + 1] = seq
      local to = kind == 'dead' and dead or done
      to[#to + 1] = now
      to[#to + 1] = seq
    else
      x.sched_add[#x.sched_add + 1] = at
      x.sched_add[#x.sched_add + 1] = seq
    end
    local attempts = tonumber(string.sub(v, 35, 44))
    local nv
    if ARGV[b + 6] == '1' then
      -- A new last status and error, and the attempt appended.
      nv = state .. t17(when) .. token .. string.format('%010d', attempts + 1) .. now17 ..
        string.sub(v, 62, 100) .. ARGV[b + 7] .. ARGV[b + 8] .. string.sub(v, d_key_pos(v)) ..
        ARGV[b + 9]
    else
      nv = d_with(v, state, t17(when), attempts, now17)
    end
    current[seq] = nv
    writes[#writes + 1] = k_d(seq)
    writes[#writes + 1] = nv
    applied = 1
  end
  res[#res + 1] = applied
end

bulk('MSET', nil, writes)
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
