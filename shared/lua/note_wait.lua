-- note_wait: fenced; what the running attempt waits for (`waiting_for` on the job hash), or that it
-- waits no more.
-- KEYS: 1 job, 2 stats
-- ARGV: 1 token, 2 waiting_for (JSON `{resource, reason, until, since}`; '' = it waits no more)
-- Returns 'OK' or an error reply 'STALE ...' (counted in stats.stale_writes).
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token')
if not fenced(f, ARGV[1], KEYS[2], 'stale_writes') then
  return redis.error_reply('STALE lease token ' .. ARGV[1] .. ' no longer holds this job')
end
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], 'waiting_for') else redis.call('HSET', KEYS[1], 'waiting_for', ARGV[2]) end
return 'OK'
