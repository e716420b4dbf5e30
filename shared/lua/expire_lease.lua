-- expire_lease: the supervisor's check of one job found in the leases index with a past expiry.
-- Safe to run from any number of supervisors at once: the job hash is the truth and the script
-- is atomic, so only one of them acts.
-- Or its check of a job whose worker stopped beating (shared/liveness.py): then ARGV 9 names that
-- worker, KEYS 15 and 16 are the shard's workers index and that worker's notices, and the job is
-- taken over only if that worker still holds it and is still dead (a frozen worker that beat again
-- meanwhile keeps it); the worker is left a 'lost <job id> <token>' notice, so if it was only frozen
-- it stops that attempt at its next beat.
-- KEYS: the 14 job keys (see lib.lua) [, 15 workers, 16 the worker's notices]
-- ARGV: 1 job id, 2 now ms, 3 now RFC 3339, 4 retention ms, 5 the attempt the supervisor read,
--       then its error object (JSON, built by the caller) 6 if restarted, 7 if out of attempts,
--       8 if lost during an apply step that may not run twice [, 9 the dead worker]
-- Returns 'alive' | 'gone' | 'requeued' (claimed but never started) | 'restarted' | 'failed' |
-- 'canceled' | 'not_running' | 'apply_interrupted' (lost during an apply step that may not run twice:
-- failed, never restarted, whatever attempts are left) | 'changed' (another attempt began since the
-- supervisor read the job: it looks again on its next pass).
local id, now = ARGV[1], tonumber(ARGV[2])
local dead = ARGV[9]
local v, f = job_view(KEYS[1], {'status', 'lease_expires_at', 'cancel_requested', 'attempt',
  'released', 'max_attempts', 'phase', 'apply_idempotent', 'action_hash', 'lease_owner', 'lease_token'},
  TRANSITION_READS)
local g = job_globals()
if not f[1] then
  redis.call('ZREM', KEYS[4], id)
  return 'gone'
end
if f[1] == 'queued' then
  -- the worker died between claim and start: the job never left `queued`
  redis.call('ZREM', KEYS[4], id)
  if not redis.call('ZSCORE', KEYS[5], id) then
    redis.call('ZADD', KEYS[5], queue_score(now, view_get(v, 'priority'), now), id)
    wake(g)
  end
  return 'requeued'
end
if f[1] ~= 'running' then
  redis.call('ZREM', KEYS[4], id)
  return 'not_running'
end
if dead then
  if f[10] ~= dead then return 'changed' end
  local until_ms = redis.call('ZSCORE', KEYS[15], dead)
  if until_ms and tonumber(until_ms) > now then return 'alive' end
elseif f[2] and tonumber(f[2]) > now then
  redis.call('ZADD', KEYS[4], f[2], id)
  return 'alive'
end
if f[4] ~= ARGV[5] then return 'changed' end
if dead then
  redis.call('SADD', KEYS[16], 'lost ' .. id .. ' ' .. f[11])
  redis.call('PEXPIRE', KEYS[16], NOTICES_KEPT_MS)
end
redis.call('HINCRBY', KEYS[8], 'lease_expiries', 1)
local attempt = tonumber(f[4])
local opts = {id = id, now = now, at = ARGV[3], retention = ARGV[4]}
if f[7] == 'apply' and f[8] ~= '1' then
  -- the side effect may have happened: running it again could do it twice, so a person checks
  local e = ARGV[8]
  opts.body = '"reason":"apply_interrupted","error":' .. e
  transition(v, KEYS[2], KEYS[3], g, 'failed', opts)
  view_set(v, 'error', e)
  view_save(v)
  return 'apply_interrupted'
end
if f[3] == '1' then
  opts.body = '"reason":"canceled; its worker was lost"'
  transition(v, KEYS[2], KEYS[3], g, 'canceled', opts)
  view_save(v)
  return 'canceled'
end
if attempt - tonumber(f[5] or '0') >= tonumber(f[6]) then
  local e = ARGV[7]
  opts.body = '"reason":"worker_lost","error":' .. e
  transition(v, KEYS[2], KEYS[3], g, 'failed', opts)
  view_set(v, 'error', e)
  view_save(v)
  return 'failed'
end
local e = ARGV[6]
opts.body = '"reason":"worker_lost","error":' .. e
transition(v, KEYS[2], KEYS[3], g, 'queued', opts)
view_set(v, 'last_error', e)
view_save(v)
return 'restarted'
