-- Shared by every script (prepended by shared/scripts.py, after the rendered TRANSITIONS and
-- TERMINAL tables). Per-job scripts take KEYS[1] = job hash, KEYS[2] = events stream,
-- KEYS[3] = checkpoint; all three share the {job id} hash tag.

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

-- Sets field/value pairs from ARGV[from..]; a field written "+name" is incremented instead.
local function set_fields(job, from)
  for i = from, #ARGV, 2 do
    local field = ARGV[i]
    if string.sub(field, 1, 1) == '+' then
      redis.call('HINCRBY', job, string.sub(field, 2), ARGV[i + 1])
    else
      redis.call('HSET', job, field, ARGV[i + 1])
    end
  end
end

-- Moves the job to `target` if TRANSITIONS allows it and appends the status event.
-- g = {leases=, queue=, wake=, deadlines=} global keys; opts = {id, now, at, body, retention, ready_at}.
-- Returns 'ok', seq, stream id; or 'invalid', current status.
local function transition(job, events, checkpoint, g, target, opts)
  local current = redis.call('HGET', job, 'status')
  if not current then return 'missing' end
  if not TRANSITIONS[current][target] then return 'invalid', current end
  redis.call('HSET', job, 'status', target)
  if current == 'running' then
    redis.call('ZREM', g.leases, opts.id)
    redis.call('HDEL', job, 'lease_owner', 'lease_expires_at')
  end
  if current == 'queued' then redis.call('ZREM', g.queue, opts.id) end
  if target == 'queued' then
    local ready = opts.ready_at or opts.now
    redis.call('HSET', job, 'ready_at', ready)
    redis.call('ZADD', g.queue, ready, opts.id)
    redis.call('LPUSH', g.wake, '1')
    redis.call('LTRIM', g.wake, 0, 15)
  end
  local body = '"status":"' .. target .. '","at":"' .. opts.at .. '"'
  if opts.body and opts.body ~= '' then body = body .. ',' .. opts.body end
  local attempt = redis.call('HGET', job, 'attempt')
  local seq, id = append_event(job, events, 'status', attempt, body)
  if TERMINAL[target] then
    redis.call('HSET', job, 'finished_at', opts.now, 'terminal_id', id)
    redis.call('ZREM', g.deadlines, opts.id)
    redis.call('PEXPIRE', job, opts.retention)
    redis.call('PEXPIRE', events, opts.retention)
    redis.call('DEL', checkpoint)
  end
  return 'ok', seq, id
end
