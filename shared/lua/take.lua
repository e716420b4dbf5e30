-- take: claim up to n ready jobs from one shard's queues and start each of them (queued → running
-- under a new fencing token, as start.lua does), so a worker gets a batch of running jobs in one round
-- trip and no provisional lease is needed.
-- KEYS: 1 leases, 2 deadlines, 3 counts, 4 webhook outbox, 5 workers, 6.. queue(type) of each type
--       served; all of one shard
-- ARGV: 1 n (at most this many jobs: the worker's free slots), 2 worker id, 3 now ms, 4 now RFC 3339,
--       5 lease ms, 6 retention ms, 7 the shard's key base (`bl:{tag}`, ShardKeys.base),
--       8 places the worker reserved of concurrency-limited resources, 'NAME=n;NAME=n' ('' = none:
--       no job is held back), 9.. for each queue of KEYS 6.., the resources its type's jobs use
--       (comma list; '@': each job's own `uses` field, filled from its input at creation)
-- With ARGV 8, a job that uses a resource named there starts only while places of it are left (each
-- start takes one); the others stay in their queue, in their place (reserve.lua, release.lua).
-- A job's own keys are not in KEYS: they are built here from its id and ARGV 7 as shared/keys.py names
-- them (`<base>:job:<id>`, `<base>:job:<id>:events`, `<base>:job:<id>:checkpoint`,
-- `<base>:job:<id>:text`). They carry the shard's hash tag, so they lie in the one cluster slot of KEYS.
-- Order: a queue's score is a job's ready time moved by its priority and its tenant's turn
-- (queue_score() in lib.lua, shared/priority.py): high jobs are placed HIGH_AHEAD_MS sooner, low ones
-- LOW_BEHIND_MS later, so higher goes first among jobs that became ready within that distance, and a
-- low job waits at most LOW_BEHIND_MS for later normal work (ageing); a new job is placed FAIR_STEP_MS
-- later for each job of its tenant already queued (create.lua), so tenants' jobs interleave and one
-- that queued 300 does not hold back another's first. Whether a job is ready is its own time
-- (ready_of() of the score), never its place's. One sorted set per type, so order costs no command
-- here. A queue is read n + 32 entries deep by score: a job in back-off (scored at its ready time) may
-- sit before ready jobs placed behind their tenant's, and up to 32 such are passed over; more hold
-- the take back until the first of them is ready.
-- Returns {next, {job id, token, attempt, flat record}, ...}: one entry per job started, first in
-- queue order; next says when to ask this shard again: now when more may be ready (a queue had n
-- ready entries, or stale entries were dropped), else the ms when the soonest job seen queued for
-- later is ready, else '' (nothing is queued: a new job's wake token will tell).
-- Safe to resend: a second run with the same arguments answers the jobs the first one started (as
-- they are now) and takes no more.
-- Guarantees: start_attempt()'s (lib.lua: every attempt gets a larger token than the one before, and
-- writes carrying an older token are refused), and the lease entry, in the same step as the claim: a
-- job is never out of its queue without being running and leased. The lease is the worker's
-- (shared/liveness.py: scored from HELD_BY_WORKER on, kept by the worker's beats), and the worker is
-- alive in the workers index until now + lease from this step on: no job is held by a worker the
-- supervisor cannot see die. A queue entry whose job is no
-- longer queued (or gone) is dropped and the job left as it is.
local n, worker, now, lease = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
local base = ARGV[7]
-- places left per resource, and the resources of each queue's jobs (only with ARGV 8)
local places, queue_uses = nil, {}
if ARGV[8] and ARGV[8] ~= '' then
  places = {}
  for name, n in string.gmatch(ARGV[8], '([^;=]+)=(%d+)') do places[name] = tonumber(n) end
  for i = 6, #KEYS do queue_uses[i] = ARGV[i + 3] or '' end
end
-- the score of the leases this take gives: one per take (Attempts.take gives each take its own now)
local held = HELD_BY_WORKER + now + lease

-- A resend (the client sent the script again after a lost reply, same arguments): the jobs the first
-- run started are running under this worker, started at ARGV 3 and scored `held`: no other take of
-- this worker from this shard has that now (Attempts.take waits for the next ms). They are answered
-- again and nothing more is taken, so no job is left running unknown to its worker.
do
  local again = {''}
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], held, held)) do
    local v = job_view_all(base .. ':job:' .. id)
    if view_get(v, 'status') == 'running' and view_get(v, 'lease_owner') == worker
        and view_get(v, 'started_at') == ARGV[3] then
      again[#again + 1] = {id, tonumber(view_get(v, 'lease_token')), tonumber(view_get(v, 'attempt')),
        view_flat(v)}
    end
  end
  if #again > 1 then return again end
end

-- the ready entries by score over the queues (each queue's first n + 32, merged); a queue whose first
-- n + 32 are all ready may have more
local ready, soonest, more = {}, nil, false
-- a queue is read 32 entries past n: a held back job keeps its place, and so may a job that is not
-- ready yet (in back-off) ahead of ready ones placed behind their tenant's earlier jobs
local scan = n + 32
for i = 6, #KEYS do
  local r = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', '+inf', 'WITHSCORES', 'LIMIT', 0, scan)
  for j = 1, #r, 2 do
    local score = tonumber(r[j + 1])
    local at = ready_of(score)
    if at <= now then
      ready[#ready + 1] = {id = r[j], score = score, queue = i, order = #ready}
    elseif not soonest or at < soonest then
      soonest = at
    end
  end
  if #r == 2 * scan and ready_of(r[#r]) <= now then more = true end
end
if #ready == 0 then return {soonest and tostring(soonest) or ''} end
table.sort(ready, function(a, b)
  if a.score ~= b.score then return a.score < b.score end
  return a.order < b.order
end)

-- the resources a job uses, when places are counted: its type's, or its own field
local function fits(entry)
  if not places then return true end
  local uses = queue_uses[entry.queue]
  if uses == '@' then uses = redis.call('HGET', base .. ':job:' .. entry.id, 'uses') or '' end
  local names = {}
  for name in string.gmatch(uses, '[^,]+') do
    if places[name] then
      if places[name] < 1 then return false end
      names[#names + 1] = name
    end
  end
  for _, name in ipairs(names) do places[name] = places[name] - 1 end
  return true
end

local taken, by_queue, held_back = {}, {}, 0
for _, entry in ipairs(ready) do
  if #taken >= n then break end
  if fits(entry) then
    taken[#taken + 1] = entry
    local ids = by_queue[entry.queue]
    if not ids then
      ids = {}
      by_queue[entry.queue] = ids
    end
    ids[#ids + 1] = entry.id
  else
    held_back = held_back + 1
  end
end
for i, ids in pairs(by_queue) do redis.call('ZREM', KEYS[i], unpack_(ids)) end

local reply, leased = {soonest and tostring(soonest) or ''}, {}
for _, entry in ipairs(taken) do
  local id, job = entry.id, base .. ':job:' .. entry.id
  -- the whole hash in one read: the reply carries the record
  local v = job_view_all(job)
  -- only a queued job starts; an entry of any other (or of none) was stale and is gone now
  if view_get(v, 'status') == 'queued' then
    local g = {leases = KEYS[1], deadlines = KEYS[2], counts = KEYS[3], webhooks = KEYS[4],
      queue = KEYS[entry.queue], text = job .. ':text'}
    local token, attempt = start_attempt(v, job .. ':events', job .. ':checkpoint', g,
      {id = id, worker = worker, now = now, at = ARGV[4], lease = lease, retention = ARGV[6], dequeued = true})
    view_save(v)
    leased[#leased + 1] = held
    leased[#leased + 1] = id
    reply[#reply + 1] = {id, token, attempt, view_flat(v)}
  else
    more = true  -- a stale entry took the place of one that may be ready behind it
  end
end
if #leased > 0 then
  redis.call('ZADD', KEYS[1], unpack_(leased))
  redis.call('ZADD', KEYS[5], now + lease, worker)
end
-- held back jobs wait for a place: a release wakes the workers (release.lua), not a take again now
if more or #ready > #taken + held_back then reply[1] = tostring(now) end
return reply
