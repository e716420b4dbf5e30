-- Shared by every script (prepended by shared/scripts.py, after the rendered TRANSITIONS and
-- TERMINAL tables). Every script that may change a job's status takes the same KEYS (JobStore.job_keys):
--   1 job hash, 2 events stream, 3 checkpoint (these share the {job id} hash tag),
--   4 leases, 5 queue(type), 6 wake(type), 7 deadlines, 8 stats, 9 counts, 10 webhook outbox,
--   11 retiring (finished jobs by the time their keys expire).
-- Helpers, in the order they are defined below:
--   job_globals()     those global KEYS by name (g)
--   fenced()          the fencing-token check of a lease-bound write
--   append_event()    one event under the job's next seq
--   status_event()    the event of a new status, recorded as the job's last_status_id
--   set_fields()      field/value pairs from ARGV ("+field", "counts:field", "stats:field" increment)
--   notify_webhook()  the webhook outbox entry of a job with a webhook
--   count_status()    moves the job in the counts per type and status, and its tenant's
--   wake()            tells the type's workers that a job is ready
--   set_deadline()    a start deadline or review window the supervisor enforces
--   clear_deadline()  ends it: met, decided or expired
--   transition()      a checked status change and everything that goes with it

local function job_globals()
  return {leases = KEYS[4], queue = KEYS[5], wake = KEYS[6], deadlines = KEYS[7], stats = KEYS[8],
    counts = KEYS[9], webhooks = KEYS[10], retiring = KEYS[11]}
end

-- The fencing rule of every lease-bound write: it belongs to the attempt holding the lease only while
-- the job is `running` and its lease_token equals the caller's `token` (start.lua gives every attempt
-- a larger one). `f` is the job's HMGET reply, starting with 'status', 'lease_token'. A refused write
-- is counted in the stats hash under `counter` ('stale_writes', 'stale_heartbeats'); the caller
-- answers in its own shape. Returns true when the caller holds the job.
local function fenced(f, token, stats, counter)
  if f[1] == 'running' and f[2] == token then return true end
  redis.call('HINCRBY', stats, counter, 1)
  return false
end

-- run time buckets (ms) of the duration histogram kept in counts
local RUN_MS_BUCKETS = {100, 500, 1000, 5000, 15000, 60000, 300000, 900000, 3600000}

-- Appends one event under the job's next seq. `body` is the event's own JSON members without
-- braces (built by the caller with a real JSON encoder); seq and attempt are added here so the
-- numbering is atomic with the write. Returns seq, stream id.
local function append_event(job, events, etype, attempt, body)
  local seq = redis.call('HINCRBY', job, 'last_seq', 1)
  local data = '{"type":"' .. etype .. '","seq":' .. seq .. ',"attempt":' .. attempt
  if body ~= '' then data = data .. ',' .. body end
  local id = redis.call('XADD', events, '*', 't', etype, 'd', data .. '}')
  return seq, id
end

-- Appends the event of the job's new `status` (members status, at, then `body`, which may be nil or
-- '') and records its stream id as last_status_id: webhook_done.lua compares that with the delivery
-- cursor, so it is written with every status event. Returns seq, stream id.
local function status_event(job, events, attempt, status, at, body)
  local data = '"status":"' .. status .. '","at":"' .. at .. '"'
  if body and body ~= '' then data = data .. ',' .. body end
  local seq, id = append_event(job, events, 'status', attempt, data)
  redis.call('HSET', job, 'last_status_id', id)
  return seq, id
end

-- Sets field/value pairs from ARGV[from..] on the job; a field written "+name" is incremented
-- instead, and "counts:name" / "stats:name" increment that field of the counts / stats hash
-- (g = job_globals()), so counters move in the same script as the status they count.
local function set_fields(job, from, g)
  for i = from, #ARGV, 2 do
    local field = ARGV[i]
    if string.sub(field, 1, 1) == '+' then
      redis.call('HINCRBY', job, string.sub(field, 2), ARGV[i + 1])
    elseif string.sub(field, 1, 7) == 'counts:' then
      redis.call('HINCRBY', g.counts, string.sub(field, 8), ARGV[i + 1])
    elseif string.sub(field, 1, 6) == 'stats:' then
      redis.call('HINCRBY', g.stats, string.sub(field, 7), ARGV[i + 1])
    else
      redis.call('HSET', job, field, ARGV[i + 1])
    end
  end
end

-- A new status is known to the outbox when the job has a webhook: the supervisor delivers it.
local function notify_webhook(job, g, id, now)
  local url = redis.call('HGET', job, 'webhook_url')
  if url and url ~= '' then redis.call('ZADD', g.webhooks, 'NX', now, id) end
end

-- Moves the job from status `from` (nil for a new job) to `to` in counts, in the same script as the
-- status itself: jobs per type and status (field jobs|TYPE|STATUS, for /metrics) and jobs per tenant,
-- type and status (field tenant|TENANT|TYPE|STATUS, GET /v1/jobs/counts). Returns the tenant field
-- now counting the job (nil for a job without a tenant).
local function count_status(job, g, jtype, from, to)
  if from then redis.call('HINCRBY', g.counts, 'jobs|' .. jtype .. '|' .. from, -1) end
  redis.call('HINCRBY', g.counts, 'jobs|' .. jtype .. '|' .. to, 1)
  local tenant = redis.call('HGET', job, 'tenant')
  if not tenant then return nil end
  local prefix = 'tenant|' .. tenant .. '|' .. jtype .. '|'
  if from then redis.call('HINCRBY', g.counts, prefix .. from, -1) end
  redis.call('HINCRBY', g.counts, prefix .. to, 1)
  return prefix .. to
end

-- A job of the type was queued: one token on its wake list ends a worker's BLPOP; the list is
-- trimmed to 16 tokens. g = job_globals().
local function wake(g)
  redis.call('LPUSH', g.wake, '1')
  redis.call('LTRIM', g.wake, 0, 15)
end

-- A deadline of the job (kind 'start': it must start by then; 'review': it must be decided by then):
-- deadline_at and deadline_kind on the job, and its entry in the deadlines index, which the
-- supervisor scans (expire_deadline.lua). `due` is in ms. g = job_globals().
local function set_deadline(job, g, id, due, kind)
  redis.call('HSET', job, 'deadline_at', due, 'deadline_kind', kind)
  redis.call('ZADD', g.deadlines, due, id)
end

-- The job's deadline no longer applies: out of the index, and no kind (deadline_at stays on record).
local function clear_deadline(job, g, id)
  redis.call('ZREM', g.deadlines, id)
  redis.call('HDEL', job, 'deadline_kind')
end

-- Moves the job to `target` if TRANSITIONS allows it and appends the status event.
-- g = job_globals(); opts = {id, now, at, body, retention, ready_at}.
-- Side effects kept here so that every path agrees: lease and queue indexes, per-type counts, the
-- attempt's end record, the review window, the webhook outbox, expiry of finished jobs.
-- Returns 'ok', seq, stream id; or 'invalid', current status.
local function transition(job, events, checkpoint, g, target, opts)
  local current = redis.call('HGET', job, 'status')
  if not current then return 'missing' end
  if not TRANSITIONS[current][target] then return 'invalid', current end
  local now = tonumber(opts.now)
  local jtype = redis.call('HGET', job, 'type')
  redis.call('HSET', job, 'status', target)
  local counted = count_status(job, g, jtype, current, target)
  if current == 'running' then
    redis.call('ZREM', g.leases, opts.id)
    redis.call('HDEL', job, 'lease_owner', 'lease_expires_at')
    -- the run clock stops here: waiting in review (or in a queue) afterwards is not run time.
    -- An apply step's run time adds to the handler's, so a reviewed job reports both, not the wait.
    local r = redis.call('HMGET', job, 'started_at', 'phase', 'handler_run_ms')
    if r[1] then
      local ran = now - tonumber(r[1])
      if r[2] == 'apply' then ran = ran + tonumber(r[3] or '0') end
      if target == 'needs_review' then redis.call('HSET', job, 'handler_run_ms', ran) end
      redis.call('HSET', job, 'run_ms', ran)
    end
  end
  if current == 'queued' then redis.call('ZREM', g.queue, opts.id) end
  if target == 'queued' then
    local ready = opts.ready_at or opts.now
    redis.call('HSET', job, 'ready_at', ready)
    redis.call('ZADD', g.queue, ready, opts.id)
    wake(g)
  end
  local attempt = redis.call('HGET', job, 'attempt')
  local seq, id = status_event(job, events, attempt, target, opts.at, opts.body)
  if current == 'running' then
    -- the attempt's end, for the record's attempt history (results are left out: they can be large)
    local ending = '{"ended_at":"' .. opts.at .. '","status":"' .. target .. '"'
    if target ~= 'completed' and target ~= 'needs_review' and opts.body and opts.body ~= '' then
      ending = ending .. ',' .. opts.body
    end
    redis.call('HSET', job, 'attempt:' .. attempt .. ':end', ending .. '}')
  end
  if target == 'needs_review' then
    -- a cancel that came as the handler finished is moot: a person decides now (reject cancels), and
    -- a flag left over would stop the approved apply step at its first heartbeat
    redis.call('HDEL', job, 'cancel_requested')
    redis.call('HSET', job, 'review_state', 'pending')
    local window = redis.call('HGET', job, 'review_window_ms')
    if window and window ~= '' then set_deadline(job, g, opts.id, now + tonumber(window), 'review') end
  end
  notify_webhook(job, g, opts.id, now)
  if TERMINAL[target] then
    -- the histogram counts the run that ended the job (not a job ended while queued)
    local ran = nil
    if current == 'running' or current == 'needs_review' then ran = redis.call('HGET', job, 'run_ms') end
    if ran then
      local run_ms = tonumber(ran)
      for _, le in ipairs(RUN_MS_BUCKETS) do
        if run_ms <= le then redis.call('HINCRBY', g.counts, 'run_ms|' .. jtype .. '|' .. le, 1) end
      end
      redis.call('HINCRBY', g.counts, 'run_ms|' .. jtype .. '|+Inf', 1)
      redis.call('HINCRBY', g.counts, 'run_ms_sum|' .. jtype, run_ms)
    end
    redis.call('HSET', job, 'finished_at', opts.now, 'terminal_id', id)
    redis.call('ZREM', g.deadlines, opts.id)
    redis.call('PEXPIRE', job, opts.retention)
    redis.call('PEXPIRE', events, opts.retention)
    -- when the keys go, the tenant's count of this status goes down with them (shared/lua/retire.lua)
    if counted then redis.call('ZADD', g.retiring, now + tonumber(opts.retention), opts.id .. ' ' .. counted) end
    redis.call('DEL', checkpoint)
  end
  return 'ok', seq, id
end
