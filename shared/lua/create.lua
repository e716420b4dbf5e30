-- create: store a new job as `queued`, index it, queue it, and remember its idempotency key if any.
-- Its place in the queue (queue_score()): its priority's, and FAIR_STEP_MS later for each job of its
-- tenant and type already queued in the shard (the tenant's queued count, which this script counts
-- anyway), so a tenant with many jobs queued does not hold back another's first ones.
-- KEYS: the 14 job keys (see lib.lua), 15 tenant jobs, 16 the tenant's creation counter of this rate
--       window, 17 idempotency (only when the client gave a key)
-- ARGV: 1 job id, 2 now ms, 3 now RFC 3339, 4 request hash ('' without an idempotency key), 5 how
--       long the idempotency key is kept (ms), 6 start deadline ms ('' = none), 7 creations allowed in
--       the window ('' = no limit), 8 how long the counter is kept (ms), 9 queued jobs of the type the
--       tenant may have in this shard ('' = no cap), 10.. field/value pairs of the record as submitted
--       (id and the fields set below are the script's; a field not given is absent)
-- A create that the Redis client sends again after a lost reply finds its job instead of making two:
-- by the client's idempotency key, or else by its job id (made by the caller, new for each request),
-- already in the tenant's list.
-- Returns {'created', id, the new job's hash as HGETALL would list it}, {'exists', existing id, its
-- request hash} (a replay creates nothing, so it is not counted against the rate), {'full'} (the
-- tenant has ARGV 9 jobs of the type queued here: nothing is written, nor counted against the rate),
-- or {'limited'} (over the tenant's rate: nothing is written but the counter, which counts the refused
-- request too).
-- Guarantees: the record, its first status event and its queue entry appear together or not at all;
-- one idempotency key maps to one job for the retention period.
local id, now = ARGV[1], ARGV[2]
local g = job_globals()
local idem = KEYS[17]
if idem then
  local existing = redis.call('GET', idem)
  if existing then
    local space = string.find(existing, ' ', 1, true)
    return {'exists', string.sub(existing, 1, space - 1), string.sub(existing, space + 1)}
  end
elseif redis.call('ZADD', KEYS[15], 'NX', now, id) == 0 then
  -- the job id is the request's own: listed already, the job is this request's, made by a first run
  return {'exists', id, ARGV[4]}
end
if ARGV[9] ~= '' then
  local tenant, jtype
  for i = 10, #ARGV, 2 do
    if ARGV[i] == 'tenant' then tenant = ARGV[i + 1] elseif ARGV[i] == 'type' then jtype = ARGV[i + 1] end
  end
  local queued = redis.call('HGET', g.counts, 'tenant|' .. tostring(tenant) .. '|' .. tostring(jtype) .. '|queued')
  if tonumber(queued or 0) >= tonumber(ARGV[9]) then
    if not idem then redis.call('ZREM', KEYS[15], id) end
    return {'full'}
  end
end
if ARGV[7] ~= '' then
  local count = redis.call('INCR', KEYS[16])
  if count == 1 then redis.call('PEXPIRE', KEYS[16], ARGV[8]) end
  if count > tonumber(ARGV[7]) then
    if not idem then redis.call('ZREM', KEYS[15], id) end
    return {'limited'}
  end
end
-- the record is written with one HSET at the end (a new job: there is nothing to read)
local v = job_view_all(KEYS[1], true)
for _, pair in ipairs({{'id', id}, {'status', 'queued'}, {'attempt', 0}, {'released', 0}, {'last_seq', 0},
    {'lease_token', 0}, {'created_at', now}, {'ready_at', now}}) do
  view_set(v, pair[1], pair[2])
end
set_fields(v, 10, g)
status_event(v, KEYS[2], 0, 'queued', ARGV[3])
-- the tenant's turn: FAIR_STEP_MS behind for each of its jobs of the type already queued in this shard
local _, queued = count_status(g, view_get(v, 'type'), view_get(v, 'tenant'), nil, 'queued')
local behind = (tonumber(queued) or 1) - 1
redis.call('ZADD', g.queue, queue_score(now, view_get(v, 'priority'), now, behind * FAIR_STEP_MS), id)
wake(g)
notify_webhook(g, view_get(v, 'webhook_url'), id, now)
if idem then
  redis.call('ZADD', KEYS[15], now, id)
  redis.call('SET', idem, id .. ' ' .. ARGV[4], 'PX', ARGV[5])
end
if ARGV[6] ~= '' then set_deadline(v, g, id, ARGV[6], 'start') end
view_save(v)
-- the script wrote every field, so the view is the record
return {'created', id, view_flat(v)}
