-- list_dead: ARGV = prefix, has_tenant, tenant, has_endpoint, endpoint, limit,
--   after_at, after_seq, budget.
-- Looks at no more than `budget` dead letters after the cursor (the time of death and
-- seq of the last one looked at; both '' to start at the oldest), so that a filter
-- matching few of a long queue never holds Redis for long. Returns the cursor to go
-- on from ('' and '' when the queue has been looked through), then the records of the
-- matching ones, oldest first, at most `limit`.
local by_tenant, tenant = ARGV[2] == '1', ARGV[3]
local by_endpoint, endpoint = ARGV[4] == '1', ARGV[5]
local limit = tonumber(ARGV[6])
local after_at, after_seq = ARGV[7], ARGV[8]
local budget = tonumber(ARGV[9])

-- Dead letters are ordered by time of death, then by seq (zero-padded, so equal
-- scores order members by seq). Those at the cursor's time up to the cursor were
-- looked at already: fetch them too, and skip them.
local from, skip = '-inf', 0
if after_at ~= '' then
  from = after_at
  skip = redis.call('ZCOUNT', K_DEAD, after_at, after_at)
end
local fetch = budget + skip
local entries = redis.call('ZRANGE', K_DEAD, from, '+inf', 'BYSCORE', 'LIMIT', 0, fetch,
  'WITHSCORES')
local seqs, ats = {}, {}
local cursor_at, cursor_seq = tonumber(after_at), tonumber(after_seq)
for i = 1, #entries, 2 do
  local seq, at = entries[i], entries[i + 1]
  if not cursor_at or tonumber(at) > cursor_at or tonumber(seq) > cursor_seq then
    seqs[#seqs + 1] = seq
    ats[#ats + 1] = at
  end
end

local keys = {}
for i, seq in ipairs(seqs) do keys[i] = k_d(seq) end
local vals = mget(keys)
local out = {'', ''}
local last = 0
for i = 1, #seqs do
  last = i
  local v = vals[i]
  if v then
    local t, ep = d_owner(v)
    local ok = (not by_endpoint or ep == endpoint)
    if ok and by_tenant then ok = t == tenant end
    if ok then
      out[#out + 1] = v
      if #out - 2 >= limit then break end
    end
  end
end
-- More may follow when this call stopped early or fetched all it asked for.
if last > 0 and (last < #seqs or #entries / 2 >= fetch) then
  out[1] = ats[last]
  out[2] = seqs[last]
end
return out
