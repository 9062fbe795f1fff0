-- get_event: ARGV = prefix, ekey. Returns false or
-- {event record, {delivery record, ...}} with deliveries in creation order.
local seqs = redis.call('HGET', K_EKEYS, ARGV[2])
if not seqs then return false end
local eseq = string.sub(seqs, 1, 16)
local keys = {}
for i = 17, #seqs, 16 do keys[#keys + 1] = k_d(string.sub(seqs, i, i + 15)) end
local deliveries = {}
for _, v in ipairs(mget(keys)) do
  if v then deliveries[#deliveries + 1] = v end
end
return {redis.call('GET', k_ev(eseq)), deliveries}
