-- heartbeat: extend the lease of a running attempt.
-- KEYS: job, leases, stats
-- ARGV: 1 job id, 2 token, 3 now ms, 4 lease ms
-- Returns 'ok', 'cancel' (the job was asked to stop), or 'lost' (another attempt holds the job,
-- or it is no longer running: the caller must stop writing; counted in stats.stale_heartbeats).
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token', 'cancel_requested')
if not fenced(f, ARGV[2], KEYS[3], 'stale_heartbeats') then
  return 'lost'
end
local expires = tonumber(ARGV[3]) + tonumber(ARGV[4])
redis.call('HSET', KEYS[1], 'last_heartbeat_at', ARGV[3], 'lease_expires_at', expires)
redis.call('ZADD', KEYS[2], expires, ARGV[1])
if f[3] == '1' then return 'cancel' end
return 'ok'
