-- checkpoint: fenced save of the handler's checkpoint (opaque JSON).
-- KEYS: job, checkpoint, stats
-- ARGV: 1 token, 2 value, 3 the number of this save within the attempt (1, 2, … counted by the writer;
--       optional: without it every save is written)
-- Returns 'OK' or an error reply 'STALE ...' (counted in stats.stale_writes).
-- Guarantees: a save sent again (a client retry after a lost reply), or one that arrives after a later
-- save of the same attempt, changes nothing: the checkpoint never goes back.
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token', 'attempt')
if not fenced(f, ARGV[1], KEYS[3], 'stale_writes') then
  return redis.error_reply('STALE lease token ' .. ARGV[1] .. ' no longer holds this job')
end
if ARGV[3] and ARGV[3] ~= '' then
  local counter = 'attempt:' .. f[3] .. ':checkpoints'
  local number = tonumber(ARGV[3])
  if number <= tonumber(redis.call('HGET', KEYS[1], counter) or '0') then return 'OK' end
  redis.call('HSET', KEYS[1], counter, number)
end
redis.call('SET', KEYS[2], ARGV[2])
return 'OK'
