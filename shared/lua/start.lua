-- start: begin a new attempt of a claimed job: queued → running under a fresh fencing token.
-- KEYS: the 11 job keys (see lib.lua)
-- ARGV: 1 job id, 2 worker id, 3 now ms, 4 now RFC 3339, 5 lease ms, 6 retention ms
-- Returns {'ok', token, attempt, flat record} or {'skip', status} when the job is no longer queued
-- (canceled or expired while in transit, or started by another worker after this claim was requeued).
-- Safe to resend: when the job is already running under this worker (ARGV 2), the reply is 'ok' with
-- the current token, attempt and record, and nothing changes.
-- Guarantees: every attempt gets a larger token than the one before; writes carrying an older
-- token are refused by append/transition/heartbeat/checkpoint. The lease entry of a running job is
-- never removed here: it belongs to the worker that runs it.
local g = job_globals()
local v, f = job_view(KEYS[1], {'status', 'lease_owner', 'lease_token', 'attempt', 'first_started_at',
  'finished_at', 'deadline_kind'}, TRANSITION_READS)
local status = f[1]
if status == 'running' and f[2] == ARGV[2] then
  return {'ok', tonumber(f[3]), tonumber(f[4]), redis.call('HGETALL', KEYS[1])}
end
if status ~= 'queued' then
  -- the provisional lease of this claim; a running job's entry is another worker's live lease
  if status ~= 'running' then redis.call('ZREM', KEYS[4], ARGV[1]) end
  return {'skip', status or 'missing'}
end
local now, lease = tonumber(ARGV[3]), tonumber(ARGV[5])
view_incr(v, 'attempt', 1)
view_incr(v, 'lease_token', 1)
local attempt, token = view_get(v, 'attempt'), view_get(v, 'lease_token')
local worker = string.gsub(ARGV[2], '["\\]', '')
transition(v, KEYS[2], KEYS[3], g, 'running',
  {id = ARGV[1], now = now, at = ARGV[4], body = '"worker":"' .. worker .. '"', retention = ARGV[6]})
if not view_get(v, 'first_started_at') then view_set(v, 'first_started_at', now) end
view_set(v, 'started_at', now)
view_set(v, 'last_heartbeat_at', now)
view_set(v, 'lease_owner', ARGV[2])
view_set(v, 'lease_expires_at', now + lease)
view_set(v, 'emitted', 0)
-- an approved job queued for its apply step: from here on, cancel is refused (the side effect may run)
if view_get(v, 'phase') == 'apply' then view_set(v, 'applying', '1') end
view_set(v, 'attempt:' .. attempt .. ':start',
  '{"attempt":' .. attempt .. ',"started_at":"' .. ARGV[4] .. '","worker":"' .. worker .. '"}')
view_del(v, 'finished_at')
redis.call('ZADD', KEYS[4], now + lease, ARGV[1])
-- a start deadline is met once the job starts
if view_get(v, 'deadline_kind') == 'start' then clear_deadline(v, g, ARGV[1]) end
view_save(v)
return {'ok', token, attempt, redis.call('HGETALL', KEYS[1])}
