-- cancel: stop a job on request. queued / needs_review → canceled at once; running → flag it and
-- tell its worker (pub/sub now; a 'cancel <job id>' notice its next beat reads, or the per-job
-- heartbeat's reply, as a backstop; the supervisor cancels it if the worker is gone); terminal →
-- 'invalid'. The worker's notices key is built here from the job key's shard (`<base>:job:<id>` →
-- `<base>:worker:<owner>:notices`, as shared/keys.py names it): it lies in the job's cluster slot.
-- KEYS: the 14 job keys (see lib.lua)
-- ARGV: 1 job id, 2 now ms, 3 now RFC 3339, 4 retention ms, 5 cancel channel, 6 reason JSON string
-- Returns {'canceled', seq} | {'requested'} | {'invalid', status} | {'missing'}.
local id = ARGV[1]
local v, f = job_view(KEYS[1], {'status', 'applying', 'lease_owner'}, TRANSITION_READS)
local status = f[1]
if not status then return {'missing'} end
-- once an approved side effect may be running, stopping it half-way would be worse than finishing
if not TERMINAL[status] and f[2] == '1' then return {'invalid', 'applying'} end
if status == 'running' then
  view_set(v, 'cancel_requested', '1')
  view_save(v)
  redis.call('PUBLISH', ARGV[5], id)
  if f[3] then
    local notices = string.sub(KEYS[1], 1, #KEYS[1] - #id - 5) .. ':worker:' .. f[3] .. ':notices'
    redis.call('SADD', notices, 'cancel ' .. id)
    redis.call('PEXPIRE', notices, NOTICES_KEPT_MS)
  end
  return {'requested'}
end
local g = job_globals()
local r, seq = transition(v, KEYS[2], KEYS[3], g, 'canceled',
  {id = id, now = ARGV[2], at = ARGV[3], body = '"reason":' .. ARGV[6], retention = ARGV[4]})
if r ~= 'ok' then return {r, seq} end
view_save(v)
return {'canceled', seq}
