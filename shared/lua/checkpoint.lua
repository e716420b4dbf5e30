-- checkpoint: fenced save of the handler's checkpoint (opaque JSON).
-- KEYS: job, checkpoint, stats
-- ARGV: 1 token, 2 value
-- Returns 'OK' or an error reply 'STALE ...' (counted in stats.stale_writes).
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token')
if not fenced(f, ARGV[1], KEYS[3], 'stale_writes') then
  return redis.error_reply('STALE lease token ' .. ARGV[1] .. ' no longer holds this job')
end
redis.call('SET', KEYS[2], ARGV[2])
return 'OK'
