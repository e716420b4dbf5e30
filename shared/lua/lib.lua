-- Shared by every script (prepended by shared/scripts.py, after the rendered TRANSITIONS and
-- TERMINAL tables). Every script that may change a job's status takes the same KEYS (JobStore.job_keys):
--   1 job hash, 2 events stream, 3 checkpoint (these share the {job id} hash tag),
--   4 leases, 5 queue(type), 6 wake(type), 7 deadlines, 8 stats, 9 counts, 10 webhook outbox,
--   11 retiring (finished jobs by the time their keys expire), 12 steps, 13 trace (the job's stored
--   step results and its spans), 14 output text (the newest attempt's output so far, for snapshots);
--   12-14 are the job's own keys, with its {job id} hash tag.
-- Helpers, in the order they are defined below:
--   job_globals()     those KEYS by name (g): the globals, and the job's steps, trace and output text
--   fenced()          the fencing-token check of a lease-bound write
--   job_view()        the job hash read with one HMGET (v), written back by view_save()
--   job_view_all()    the whole job hash read with one HGETALL (or a new job's: nothing to read)
--   view_get()        a field of the view as the script has left it so far
--   view_set()        sets a field of the view (written by view_save())
--   view_del()        deletes a field of the view (written by view_save())
--   view_incr()       increments a field of the view
--   view_save()       writes the view's changes: one HDEL, one HSET
--   view_flat()       the whole hash as the view has left it, flat as HGETALL lists it
--   add_event()       the XADD of one event
--   append_event()    one event under the job's next seq
--   status_event()    the event of a new status, recorded as the job's last_status_id
--   set_fields()      field/value pairs from ARGV ("+field", "counts:field", "stats:field" increment)
--   notify_webhook()  the webhook outbox entry of a job with a webhook
--   count_status()    moves the job in the counts per type and status, and its tenant's
--   count_minute()    one more job of a tenant that completed or failed this minute
--   wake()            tells the type's workers that a job is ready
--   queue_score()     a job's score in its queue: its ready time, moved by its priority
--   ready_of()        the ready time a queue score stands for
--   set_deadline()    a start deadline or review window the supervisor enforces
--   clear_deadline()  ends it: met, decided or expired
--   transition()      a checked status change and everything that goes with it
--   start_text()      the output text a new attempt starts with
--   start_attempt()   queued → running: a new attempt under the next fencing token (start, take)

-- `steps`, `trace` and `text` are the job's own, not globals, but every status change that needs them
-- (start_attempt(), transition()) is handed g: take.lua, which builds a job's keys itself, adds the text
-- to its g (an attempt's start needs no other; transition() skips steps and trace when g has none).
local function job_globals()
  return {leases = KEYS[4], queue = KEYS[5], wake = KEYS[6], deadlines = KEYS[7], stats = KEYS[8],
    counts = KEYS[9], webhooks = KEYS[10], retiring = KEYS[11], steps = KEYS[12], trace = KEYS[13],
    text = KEYS[14]}
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

-- run time buckets (ms) of the duration histogram kept in counts (api/metrics.py has the same list)
local RUN_MS_BUCKETS = {100, 500, 1000, 5000, 15000, 60000, 300000, 900000, 3600000}

-- Lua 5.1 (Redis) has unpack; the newer Lua of the in-process fallback has table.unpack
local unpack_ = table.unpack or unpack

-- The job hash as this script sees it, so that it is read with one HMGET and written with one HSET
-- (and one HDEL) however many of its fields the script touches. job_view() reads the fields listed in
-- `names` and `more` (each once); view_get() answers a field as the script has left it so far (false
-- when absent; a value given to view_set() as given, so a number stays a number; a field not read
-- costs an HGET); view_set(), view_del() and view_incr() are kept in the view until view_save() writes
-- them, in the order first changed. Between job_view() and view_save() every write of the job hash
-- goes through the view. Returns the view and the HMGET reply (the fields of `names` first, in order).
local function job_view(job, names, more)
  local fields, seen = {}, {}
  for _, list in ipairs({names, more or {}}) do
    for _, name in ipairs(list) do
      if not seen[name] then
        seen[name] = true
        fields[#fields + 1] = name
      end
    end
  end
  local r = {}
  if #fields > 0 then r = redis.call('HMGET', job, unpack_(fields)) end
  local v = {key = job, value = {}, changed = {}, order = {}}
  for i, name in ipairs(fields) do v.value[name] = r[i] end
  return v, r
end

-- The whole job hash with one HGETALL, for a script that answers the record as well as changing it
-- (take, start): every field is known, an absent one as absent, so no field costs another read and
-- view_flat() answers the record without one. A job that does not exist reads as a view of no fields;
-- `new` (create): a job that does not exist yet, so there is nothing to read.
local function job_view_all(job, new)
  local v = {key = job, value = {}, changed = {}, order = {}, whole = true}
  if new then return v end
  local r = redis.call('HGETALL', job)
  for i = 1, #r, 2 do v.value[r[i]] = r[i + 1] end
  return v
end

local function view_get(v, name)
  local value = v.value[name]
  if value == nil then
    if v.whole then return false end
    value = redis.call('HGET', v.key, name)
    v.value[name] = value
  end
  return value
end

local function view_set(v, name, value)
  if not v.changed[name] then
    v.changed[name] = true
    v.order[#v.order + 1] = name
  end
  v.value[name] = value
end

-- a field known to be absent (read and not found, or not in a whole view) and not set since is not
-- deleted again
local function view_del(v, name)
  local value = v.value[name]
  if (value == false or (value == nil and v.whole)) and not v.changed[name] then return end
  view_set(v, name, false)
end

-- as HINCRBY does (an absent field counts as 0): a field the view knows (read or changed) is
-- incremented in the view; one it does not, by an HINCRBY at once
local function view_incr(v, name, by)
  if v.value[name] == nil and not v.whole then
    v.value[name] = redis.call('HINCRBY', v.key, name, by)
  else
    view_set(v, name, tonumber(v.value[name] or 0) + tonumber(by))
  end
end

local function view_save(v)
  local sets, dels = {}, {}
  for _, name in ipairs(v.order) do
    local value = v.value[name]
    if value == false then
      dels[#dels + 1] = name
    else
      sets[#sets + 1] = name
      sets[#sets + 1] = value
    end
  end
  if #dels > 0 then redis.call('HDEL', v.key, unpack_(dels)) end
  if #sets > 0 then redis.call('HSET', v.key, unpack_(sets)) end
  v.changed, v.order = {}, {}
end

-- The job hash as the whole view (job_view_all()) has left it: field, value, … as HGETALL lists it
-- (in no particular order), numbers written as HSET stores them.
local function view_flat(v)
  local flat = {}
  for name, value in pairs(v.value) do
    if value then
      if type(value) == 'number' then value = string.format('%.17g', value) end
      flat[#flat + 1] = name
      flat[#flat + 1] = value
    end
  end
  return flat
end

-- The XADD of one event numbered `seq`. `body` is the event's own JSON members without braces
-- (built by the caller with a real JSON encoder). Returns the stream id and the event's JSON.
local function add_event(events, etype, seq, attempt, body)
  local data = '{"type":"' .. etype .. '","seq":' .. seq .. ',"attempt":' .. attempt
  if body ~= '' then data = data .. ',' .. body end
  data = data .. '}'
  return redis.call('XADD', events, '*', 't', etype, 'd', data), data
end

-- Appends one event under the job's next seq (HINCRBY last_seq: not for a script holding a view,
-- whose status_event() numbers its event); seq and attempt are added here so the numbering is atomic
-- with the write. Returns seq, stream id, the event's JSON.
local function append_event(job, events, etype, attempt, body)
  local seq = redis.call('HINCRBY', job, 'last_seq', 1)
  return seq, add_event(events, etype, seq, attempt, body)
end

-- Appends the event of the job's new `status` (members status, at, then `body`, which may be nil or
-- '') under the job's next seq, and records its stream id as last_status_id: webhook_done.lua
-- compares that with the delivery cursor, so it is written with every status event. Both go into the
-- view `v` (job_view()). Returns seq, stream id.
local function status_event(v, events, attempt, status, at, body)
  local data = '"status":"' .. status .. '","at":"' .. at .. '"'
  if body and body ~= '' then data = data .. ',' .. body end
  local seq = tonumber(view_get(v, 'last_seq') or 0) + 1
  local id = add_event(events, 'status', seq, attempt, data)
  view_set(v, 'last_seq', seq)
  view_set(v, 'last_status_id', id)
  return seq, id
end

-- Sets field/value pairs from ARGV[from..] on the job's view `v`; a field written "+name" is
-- incremented instead, and "counts:name" / "stats:name" increment that field of the counts / stats
-- hash (g = job_globals()), so counters move in the same script as the status they count.
local function set_fields(v, from, g)
  for i = from, #ARGV, 2 do
    local field = ARGV[i]
    if string.sub(field, 1, 1) == '+' then
      view_incr(v, string.sub(field, 2), ARGV[i + 1])
    elseif string.sub(field, 1, 7) == 'counts:' then
      redis.call('HINCRBY', g.counts, string.sub(field, 8), ARGV[i + 1])
    elseif string.sub(field, 1, 6) == 'stats:' then
      redis.call('HINCRBY', g.stats, string.sub(field, 7), ARGV[i + 1])
    else
      view_set(v, field, ARGV[i + 1])
    end
  end
end

-- A new status is known to the outbox when the job has a webhook (`url`, its webhook_url): the
-- supervisor delivers it.
local function notify_webhook(g, url, id, now)
  if url and url ~= '' then redis.call('ZADD', g.webhooks, 'NX', now, id) end
end

-- Moves the job of type `jtype` and tenant `tenant` (false or nil: none) from status `from` (nil for
-- a new job) to `to` in counts, in the same script as the status itself: jobs per type and status
-- (field jobs|TYPE|STATUS, for /metrics) and jobs per tenant, type and status (field
-- tenant|TENANT|TYPE|STATUS, GET /v1/jobs/counts). Returns the tenant field now counting the job and
-- its count (the tenant's jobs of the type in this shard in status `to`, this one included; nil for a
-- job without a tenant).
local function count_status(g, jtype, tenant, from, to)
  if from then redis.call('HINCRBY', g.counts, 'jobs|' .. jtype .. '|' .. from, -1) end
  redis.call('HINCRBY', g.counts, 'jobs|' .. jtype .. '|' .. to, 1)
  if not tenant then return nil end
  local prefix = 'tenant|' .. tenant .. '|' .. jtype .. '|'
  if from then redis.call('HINCRBY', g.counts, prefix .. from, -1) end
  return prefix .. to, redis.call('HINCRBY', g.counts, prefix .. to, 1)
end

-- Jobs that completed or failed per minute, for the charts of GET /v1/stats: a ring of MINUTE_SLOTS
-- fields per tenant and status in counts, `minute|TENANT|STATUS|SLOT` (SLOT: the minute mod
-- MINUTE_SLOTS) = minute * MINUTE_STAMP + jobs. The minute stamps its slot, so a slot left from an
-- earlier lap starts over at 1: the ring stays bounded with no expiry (Redis 7.0 has no per-field
-- one, and a key per minute would be a key every status-changing script must declare). One HINCRBY,
-- and an HSET for the first job of a minute (past 999,999 jobs in a minute the slot starts over).
local MINUTE_SLOTS = 60
local MINUTE_STAMP = 1000000
local function count_minute(g, tenant, status, now)
  if not tenant then return end
  local minute = math.floor(now / 60000)
  local field = 'minute|' .. tenant .. '|' .. status .. '|' .. (minute % MINUTE_SLOTS)
  -- counted first: only the first job of a minute finds another minute's stamp and starts the slot over
  local kept = redis.call('HINCRBY', g.counts, field, 1)
  if math.floor(kept / MINUTE_STAMP) ~= minute then
    redis.call('HSET', g.counts, field, string.format('%d', minute * MINUTE_STAMP + 1))
  end
end

-- A job of the type was queued: one token on its wake list ends a worker's BLPOP; the list is
-- trimmed to 16 tokens. g = job_globals().
local function wake(g)
  redis.call('LPUSH', g.wake, '1')
  redis.call('LTRIM', g.wake, 0, 15)
end

-- A job's score in its type's queue (shared/priority.py): its ready time `ready` (ms), placed
-- HIGH_AHEAD_MS sooner for a 'high' job and LOW_BEHIND_MS later for a 'low' one, and `behind` ms
-- later (create: FAIR_STEP_MS for each job of its tenant queued before it, so tenants take turns),
-- with the fraction telling ready_of() how to read it: .25 high, .5 low (the offset is taken back),
-- .125 normal and .625 low placed behind their tenant's jobs (ready since queued: their place may be
-- ahead of now). A normal job's score is otherwise its ready time. A high job queued for later (a
-- back-off) gets no head start: placed before ready work while it may not start, it would hide that
-- work from take.lua's first entries; make_ready() gives it back. A high job is never placed behind
-- its tenant's. Written as a string: Redis would turn a Lua number into 14 digits.
local function queue_score(ready, priority, now, behind)
  local at = math.floor(tonumber(ready))
  behind = behind or 0
  if priority == 'high' and at <= tonumber(now) then return string.format('%d.25', at - HIGH_AHEAD_MS) end
  if priority == 'low' then
    return string.format(behind > 0 and '%d.625' or '%d.5', at + behind + LOW_BEHIND_MS)
  end
  if behind > 0 then return string.format('%d.125', at + behind) end
  return ready
end

-- The ready time (ms) a queue score stands for: a job's place in its queue is moved by its priority
-- and its tenant's turn, the time it may start is not (0 for a job placed behind its tenant's: it was
-- ready when queued).
local function ready_of(score)
  score = tonumber(score)
  local whole = math.floor(score)
  local tag = score - whole
  if tag == 0.25 then return whole + HIGH_AHEAD_MS end
  if tag == 0.5 then return whole - LOW_BEHIND_MS end
  if tag == 0.125 or tag == 0.625 then return 0 end
  return score
end

-- A deadline of the job (kind 'start': it must start by then; 'review': it must be decided by then):
-- deadline_at and deadline_kind on the job's view `v`, and its entry in the deadlines index, which the
-- supervisor scans (expire_deadline.lua). `due` is in ms. g = job_globals().
local function set_deadline(v, g, id, due, kind)
  view_set(v, 'deadline_at', due)
  view_set(v, 'deadline_kind', kind)
  redis.call('ZADD', g.deadlines, due, id)
end

-- The job's deadline no longer applies: out of the index, and no kind (deadline_at stays on record).
-- A job without a deadline_kind has no entry in the index (set_deadline() writes both), so nothing is
-- removed. (An entry left by a job that moved on is the supervisor's to drop: expire_deadline.lua.)
local function clear_deadline(v, g, id)
  if not view_get(v, 'deadline_kind') then return end
  redis.call('ZREM', g.deadlines, id)
  view_del(v, 'deadline_kind')
end

-- The fields transition() reads: a script that calls it names them in its job_view() (as `more`),
-- so they come with its own HMGET.
local TRANSITION_READS = {'status', 'type', 'tenant', 'attempt', 'last_seq', 'webhook_url', 'started_at',
  'phase', 'handler_run_ms', 'run_ms', 'review_window_ms', 'cancel_requested', 'deadline_kind', 'emitted',
  'draft_bytes', 'priority'}

-- Moves the job to `target` if TRANSITIONS allows it and appends the status event.
-- v = the job's view (job_view(), with TRANSITION_READS among the fields it read; the caller saves
-- it); g = job_globals(); opts = {id, now, at, body, retention, ready_at, dequeued}: `dequeued` when
-- the caller has taken the job out of its queue already (take.lua), so leaving `queued` removes nothing.
-- Side effects kept here so that every path agrees: lease and queue indexes, per-type counts, the
-- attempt's end record, the review window, the webhook outbox, expiry of finished jobs.
-- Returns 'ok', seq, stream id; or 'invalid', current status (the view unchanged).
local function transition(v, events, checkpoint, g, target, opts)
  local current = view_get(v, 'status')
  if not current then return 'missing' end
  if not TRANSITIONS[current][target] then return 'invalid', current end
  local now = tonumber(opts.now)
  local jtype = view_get(v, 'type')
  view_set(v, 'status', target)
  local counted = count_status(g, jtype, view_get(v, 'tenant'), current, target)
  local this_run = nil
  if current == 'running' then
    redis.call('ZREM', g.leases, opts.id)
    view_del(v, 'lease_owner')
    view_del(v, 'lease_expires_at')
    -- the run clock stops here: waiting in review (or in a queue) afterwards is not run time.
    -- run_ms adds up every run of the job: each attempt's (a restarted or retried one too) and, after
    -- approval, the apply step's, so a reviewed job reports both, not the wait.
    local started = view_get(v, 'started_at')
    if started then
      this_run = now - tonumber(started)
      local ran = this_run + tonumber(view_get(v, 'run_ms') or '0')
      if target == 'needs_review' then view_set(v, 'handler_run_ms', ran) end
      view_set(v, 'run_ms', ran)
    end
  end
  if current == 'queued' and not opts.dequeued then redis.call('ZREM', g.queue, opts.id) end
  if target == 'queued' then
    local ready = opts.ready_at or opts.now
    view_set(v, 'ready_at', ready)
    redis.call('ZADD', g.queue, queue_score(ready, view_get(v, 'priority'), opts.now), opts.id)
    wake(g)
  end
  local attempt = view_get(v, 'attempt')
  local seq, id = status_event(v, events, attempt, target, opts.at, opts.body)
  if current == 'running' then
    -- the attempt's end, for the record's attempt history (results are left out: they can be large)
    local ending = '{"ended_at":"' .. opts.at .. '","status":"' .. target .. '"'
    if this_run then ending = ending .. ',"run_ms":' .. this_run end
    if target ~= 'completed' and target ~= 'needs_review' and opts.body and opts.body ~= '' then
      ending = ending .. ',' .. opts.body
    end
    view_set(v, 'attempt:' .. attempt .. ':end', ending .. '}')
  end
  if target == 'needs_review' then
    -- a cancel that came as the handler finished is moot: a person decides now (reject cancels), and
    -- a flag left over would stop the approved apply step at its first heartbeat
    view_del(v, 'cancel_requested')
    view_set(v, 'review_state', 'pending')
    local window = view_get(v, 'review_window_ms')
    if window and window ~= '' then set_deadline(v, g, opts.id, now + tonumber(window), 'review') end
  end
  notify_webhook(g, view_get(v, 'webhook_url'), opts.id, now)
  if TERMINAL[target] then
    -- the histogram counts the job's run time, every attempt (not a job ended while queued)
    local ran = nil
    if current == 'running' or current == 'needs_review' then ran = view_get(v, 'run_ms') end
    if ran then
      -- one count, in the smallest bucket that holds the run (run_ms_bucket|TYPE|LE, LE its upper
      -- bound, or +Inf); /metrics adds them up into Prometheus's cumulative buckets
      local run_ms = tonumber(ran)
      local bucket = '+Inf'
      for _, le in ipairs(RUN_MS_BUCKETS) do
        if run_ms <= le then
          bucket = le
          break
        end
      end
      redis.call('HINCRBY', g.counts, 'run_ms_bucket|' .. jtype .. '|' .. bucket, 1)
      redis.call('HINCRBY', g.counts, 'run_ms_sum|' .. jtype, run_ms)
    end
    if target == 'completed' or target == 'failed' then count_minute(g, view_get(v, 'tenant'), target, now) end
    view_set(v, 'finished_at', opts.now)
    view_set(v, 'terminal_id', id)
    clear_deadline(v, g, opts.id)
    -- an expiry outlasts the HSET of view_save(): only a write of the whole key would clear it; the
    -- job's type may keep its finished jobs for another time than the process's setting
    local retention = tonumber(redis.call('HGET', v.key, 'retention_ms')) or tonumber(opts.retention)
    redis.call('PEXPIRE', v.key, retention)
    redis.call('PEXPIRE', events, retention)
    -- the output text exists only once an attempt wrote events, or with a draft (start_text())
    if tonumber(view_get(v, 'emitted') or 0) > 0 or view_get(v, 'draft_bytes') then
      redis.call('PEXPIRE', g.text, retention)
    end
    -- when the keys go, the tenant's count of this status goes down with them (shared/lua/retire.lua)
    if counted then redis.call('ZADD', g.retiring, now + retention, opts.id .. ' ' .. counted) end
    redis.call('DEL', checkpoint)
    -- stored step results serve later attempts only; the trace is kept as long as the record
    if g.steps then redis.call('DEL', g.steps) end
    if g.trace then redis.call('PEXPIRE', g.trace, retention) end
  end
  return 'ok', seq, id
end

-- The output text (g.text) of the attempt about to start (start_attempt(), before it counts it): empty,
-- except for the first attempt of an approved job's apply step, which the UI shows after the approved
-- draft: the draft stays, its length in draft_bytes. The text is trusted only while the job field
-- text_covers is 'A:E', A its attempt and E its emitted (append keeps it so): the text is then the
-- output of attempt A's first E events (after a draft of draft_bytes). A draft whose text does not
-- cover the attempt before (written by a version that kept none) is dropped, and the apply step's
-- attempt stays uncovered. Returns whether the new attempt's text is covered from its start.
local function start_text(v, g)
  local attempt, emitted = view_get(v, 'attempt') or '0', view_get(v, 'emitted') or '0'
  local approved = view_get(v, 'phase') == 'apply' and not view_get(v, 'applying')
  if approved and view_get(v, 'text_covers') == attempt .. ':' .. emitted then
    view_set(v, 'draft_bytes', redis.call('STRLEN', g.text))
    return true
  end
  -- before the first attempt nothing has written a text
  if attempt ~= '0' then redis.call('DEL', g.text) end
  view_del(v, 'draft_bytes')
  return not approved
end

-- Begins a new attempt of the queued job in view `v` (job_view_all(); the caller has checked it is
-- `queued`):
-- queued → running under the next fencing token, leased to `o.worker` until o.now + o.lease; the
-- attempt's start record; its output text (start_text()); `applying` in the apply phase; a start
-- deadline met. The caller saves the view and adds the lease entry (g.leases, score o.now + o.lease).
-- g: the globals transition() uses (counts, queue, deadlines, webhooks) and the job's text key;
-- o = {id, worker, now, at, lease, retention, dequeued (see transition())}.
-- Returns token, attempt.
-- Every attempt gets a larger token than the one before; writes carrying an older token are refused
-- by append/transition/heartbeat/checkpoint (fenced()).
local function start_attempt(v, events, checkpoint, g, o)
  local covered = start_text(v, g)
  view_incr(v, 'attempt', 1)
  view_incr(v, 'lease_token', 1)
  local attempt, token = view_get(v, 'attempt'), view_get(v, 'lease_token')
  local worker = string.gsub(o.worker, '["\\]', '')
  transition(v, events, checkpoint, g, 'running', {id = o.id, now = o.now, at = o.at,
    body = '"worker":"' .. worker .. '"', retention = o.retention, dequeued = o.dequeued})
  if not view_get(v, 'first_started_at') then view_set(v, 'first_started_at', o.now) end
  view_set(v, 'started_at', o.now)
  view_set(v, 'last_heartbeat_at', o.now)
  view_set(v, 'lease_owner', o.worker)
  view_set(v, 'lease_expires_at', o.now + o.lease)
  view_set(v, 'emitted', 0)
  if covered then view_set(v, 'text_covers', attempt .. ':0') else view_del(v, 'text_covers') end
  -- an approved job queued for its apply step: from here on, cancel is refused (the side effect may run)
  if view_get(v, 'phase') == 'apply' then view_set(v, 'applying', '1') end
  view_set(v, 'attempt:' .. attempt .. ':start',
    '{"attempt":' .. attempt .. ',"started_at":"' .. o.at .. '","worker":"' .. worker .. '"}')
  view_del(v, 'finished_at')
  -- a job queued to wait for a resource waits no more
  view_del(v, 'waiting_for')
  -- a start deadline is met once the job starts
  if view_get(v, 'deadline_kind') == 'start' then clear_deadline(v, g, o.id) end
  return token, attempt
end
