-- transition: move a job to another status, checked against the one TRANSITIONS table.
-- KEYS: the 14 job keys (see lib.lua)
-- ARGV: 1 job id, 2 target status, 3 fencing token ('' = not fenced), 4 allowed current statuses
--       (comma list, '' = any), 5 now ms, 6 now RFC 3339, 7 status event members (JSON without
--       braces), 8 retention ms, 9 ready-at ms for `queued` ('' = now), 10.. field/value pairs
--       to set on success ("+field", "counts:field", "stats:field" increment; see set_fields in lib.lua)
-- Returns {'ok', seq, stream id} | {'stale', status} | {'invalid', status} | {'missing'}.
-- Guarantees: an illegal or stale transition changes nothing but the stale counter.
local id = ARGV[1]
local v, f = job_view(KEYS[1], {'status', 'lease_token'}, TRANSITION_READS)
if not f[1] then return {'missing'} end
if ARGV[3] ~= '' and not fenced(f, ARGV[3], KEYS[8], 'stale_writes') then
  return {'stale', f[1]}
end
if ARGV[4] ~= '' and not string.find(',' .. ARGV[4] .. ',', ',' .. f[1] .. ',', 1, true) then
  return {'invalid', f[1]}
end
local g = job_globals()
local ready = nil
if ARGV[9] ~= '' then ready = tonumber(ARGV[9]) end
local r, seq, sid = transition(v, KEYS[2], KEYS[3], g, ARGV[2],
  {id = id, now = ARGV[5], at = ARGV[6], body = ARGV[7], retention = ARGV[8], ready_at = ready})
if r ~= 'ok' then return {r, seq} end
set_fields(v, 10, g)
view_save(v)
return {'ok', seq, sid}
