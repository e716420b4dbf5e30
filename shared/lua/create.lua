-- create: store a new job as `queued`, index it, queue it, and remember its idempotency key.
-- KEYS: the 11 job keys (see lib.lua), 12 tenant jobs, 13 idempotency, 14 the tenant's creation
--       counter of this rate window
-- ARGV: 1 job id, 2 now ms, 3 now RFC 3339, 4 request hash, 5 how long the idempotency key is kept
--       (ms), 6 start deadline ms ('' = none), 7 creations allowed in the window ('' = no limit),
--       8 how long the counter is kept (ms), 9.. field/value pairs of the record
-- Every create carries an idempotency key: the client's, or one made for this request alone, so a
-- create that the Redis client sends again after a lost reply finds its job instead of making two.
-- Returns {'created', id, the new job's hash as HGETALL lists it}, {'exists', existing id, its
-- request hash} (a replay creates nothing, so it is not counted against the rate), or {'limited'}
-- (over the tenant's rate: nothing is written but the counter, which counts the refused
-- request too).
-- Guarantees: the record, its first status event and its queue entry appear together or not at all;
-- one idempotency key maps to one job for the retention period.
local id, now = ARGV[1], ARGV[2]
local g = job_globals()
do
  local existing = redis.call('GET', KEYS[13])
  if existing then
    local space = string.find(existing, ' ', 1, true)
    return {'exists', string.sub(existing, 1, space - 1), string.sub(existing, space + 1)}
  end
end
if ARGV[7] ~= '' then
  local count = redis.call('INCR', KEYS[14])
  if count == 1 then redis.call('PEXPIRE', KEYS[14], ARGV[8]) end
  if count > tonumber(ARGV[7]) then return {'limited'} end
end
-- the record is written with one HSET at the end (a new job: there is nothing to read)
local v = job_view(KEYS[1], {})
for _, pair in ipairs({{'status', 'queued'}, {'attempt', 0}, {'released', 0}, {'last_seq', 0},
    {'lease_token', 0}, {'created_at', now}, {'ready_at', now}}) do
  view_set(v, pair[1], pair[2])
end
set_fields(v, 9, g)
status_event(v, KEYS[2], 0, 'queued', ARGV[3])
redis.call('ZADD', g.queue, now, id)
wake(g)
redis.call('ZADD', KEYS[12], now, id)
count_status(g, view_get(v, 'type'), view_get(v, 'tenant'), nil, 'queued')
notify_webhook(g, view_get(v, 'webhook_url'), id, now)
redis.call('SET', KEYS[13], id .. ' ' .. ARGV[4], 'PX', ARGV[5])
if ARGV[6] ~= '' then set_deadline(v, g, id, ARGV[6], 'start') end
view_save(v)
return {'created', id, redis.call('HGETALL', KEYS[1])}
