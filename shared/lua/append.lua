-- append: fenced write of output/progress events by the attempt holding the lease.
-- KEYS: job, events, stats
-- ARGV: 1 token, then pairs of (event type, JSON members without braces)
-- Returns the last seq written, or an error reply 'STALE ...' (counted in stats.stale_writes).
-- Guarantees: seq is consecutive per job; a zombie attempt cannot add a single event.
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token', 'attempt')
if f[1] ~= 'running' or f[2] ~= ARGV[1] then
  redis.call('HINCRBY', KEYS[3], 'stale_writes', 1)
  return redis.error_reply('STALE lease token ' .. ARGV[1] .. ' no longer holds this job')
end
local seq
for i = 2, #ARGV, 2 do
  seq = append_event(KEYS[1], KEYS[2], ARGV[i], f[3], ARGV[i + 1])
end
return seq
