-- start: begin a new attempt of a claimed job: queued → running under a fresh fencing token.
-- KEYS: the 14 job keys (see lib.lua)
-- ARGV: 1 job id, 2 worker id, 3 now ms, 4 now RFC 3339, 5 lease ms, 6 retention ms
-- Returns {'ok', token, attempt, flat record} or {'skip', status} when the job is no longer queued
-- (canceled or expired while in transit, or started by another worker after this claim was requeued).
-- Safe to resend: when the job is already running under this worker (ARGV 2), the reply is 'ok' with
-- the current token, attempt and record, and nothing changes.
-- Guarantees: start_attempt()'s (lib.lua: every attempt gets a larger token than the one before, and
-- writes carrying an older token are refused). The lease entry of a running job is never removed
-- here: it belongs to the worker that runs it. A worker may do claim and start in one step: take.lua.
local g = job_globals()
-- the whole hash in one read: the reply carries the record
local v = job_view_all(KEYS[1])
local status = view_get(v, 'status')
if status == 'running' and view_get(v, 'lease_owner') == ARGV[2] then
  return {'ok', tonumber(view_get(v, 'lease_token')), tonumber(view_get(v, 'attempt')), view_flat(v)}
end
if status ~= 'queued' then
  -- the provisional lease of this claim; a running job's entry is another worker's live lease
  if status ~= 'running' then redis.call('ZREM', KEYS[4], ARGV[1]) end
  return {'skip', status or 'missing'}
end
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[5])
local token, attempt = start_attempt(v, KEYS[2], KEYS[3], g,
  {id = ARGV[1], worker = ARGV[2], now = now, at = ARGV[4], lease = lease, retention = ARGV[6]})
redis.call('ZADD', KEYS[4], now + lease, ARGV[1])
view_save(v)
return {'ok', token, attempt, view_flat(v)}
