-- webhook_done: record where a job's deliveries stand after a delivery run.
-- KEYS: 1 job hash, 2 webhook outbox
-- ARGV: 1 job id, 2 stream id of the last status event delivered ('' = none this run),
--       3 now ms, 4 next try ms after a failure ('' = the run ended without failure),
--       5 failures so far ('' = unchanged)
-- Returns 'done' (everything delivered: out of the outbox), 'more' (a status arrived meanwhile),
-- 'retry' (scheduled), or 'gone' (the job expired).
local id = ARGV[1]
if redis.call('EXISTS', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], id)
  return 'gone'
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'webhook_cursor', ARGV[2]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[1], 'webhook_failures', ARGV[5]) end
if ARGV[4] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[4], id)
  redis.call('HSET', KEYS[1], 'webhook_next_at', ARGV[4])
  return 'retry'
end
redis.call('HDEL', KEYS[1], 'webhook_next_at')
-- last_status_id is written in the same script as every status event, so comparing here cannot miss one
if redis.call('HGET', KEYS[1], 'webhook_cursor') == redis.call('HGET', KEYS[1], 'last_status_id') then
  redis.call('ZREM', KEYS[2], id)
  return 'done'
end
redis.call('ZADD', KEYS[2], ARGV[3], id)
return 'more'
