-- expire_deadline: the supervisor's check of one job found in the deadlines index.
-- A job still `queued` past its start deadline, or still `needs_review` past its review window,
-- becomes `expired`. Safe to run from any number of supervisors at once.
-- KEYS: the 14 job keys (see lib.lua)
-- ARGV: 1 job id, 2 now ms, 3 now RFC 3339, 4 retention ms, 5 the attempt the supervisor read,
--       then the error object (JSON, built by the caller) 6 for a missed start, 7 for a review window
-- Returns 'expired' | 'not_due' | 'not_applicable' | 'gone' | 'changed' (the job moved on since the
-- supervisor read it: it looks again on its next pass).
local id, now = ARGV[1], tonumber(ARGV[2])
local g = job_globals()
local v, f = job_view(KEYS[1], {'status', 'deadline_at', 'deadline_kind', 'attempt'}, TRANSITION_READS)
if not f[1] then
  redis.call('ZREM', g.deadlines, id)
  return 'gone'
end
if f[2] and tonumber(f[2]) > now then
  redis.call('ZADD', g.deadlines, f[2], id)
  return 'not_due'
end
local kind = f[3]
if not ((kind == 'start' and f[1] == 'queued') or (kind == 'review' and f[1] == 'needs_review')) then
  redis.call('ZREM', g.deadlines, id)
  return 'not_applicable'
end
if f[4] ~= ARGV[5] then return 'changed' end
local err = ARGV[6]
if kind == 'review' then
  err = ARGV[7]
  view_set(v, 'review_state', 'expired')
  view_set(v, 'review_at', ARGV[3])
end
view_set(v, 'error', err)
transition(v, KEYS[2], KEYS[3], g, 'expired', {id = id, now = ARGV[2], at = ARGV[3],
  body = '"reason":"deadline","error":' .. err, retention = ARGV[4]})
clear_deadline(v, g, id)
view_save(v)
return 'expired'
