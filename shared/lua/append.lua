-- append: fenced write of output/progress events by the attempt holding the lease.
-- KEYS: job, events, stats
-- ARGV: 1 token, 2 index of this batch's first event within the attempt (0, 1, 2, … counted by the
--       writer), then pairs of (event type, JSON members without braces)
-- Returns the number of events this attempt has written, or an error reply 'STALE ...' (counted in
-- stats.stale_writes).
-- Guarantees: seq is consecutive per job; a zombie attempt cannot add a single event; a batch sent
-- again (a client retry after a lost reply) writes only the events not written yet, so retries
-- never repeat output.
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token', 'attempt', 'emitted')
if not fenced(f, ARGV[1], KEYS[3], 'stale_writes') then
  return redis.error_reply('STALE lease token ' .. ARGV[1] .. ' no longer holds this job')
end
local emitted = tonumber(f[4] or '0')
local index = tonumber(ARGV[2])
if index > emitted then
  return redis.error_reply('GAP batch starts at ' .. index .. ' but the attempt has written ' .. emitted)
end
for i = 3, #ARGV, 2 do
  if index >= emitted then
    append_event(KEYS[1], KEYS[2], ARGV[i], f[3], ARGV[i + 1])
    emitted = emitted + 1
  end
  index = index + 1
end
redis.call('HSET', KEYS[1], 'emitted', emitted)
return emitted
