-- decide: a person's decision on a job in `needs_review`.
-- KEYS: the 14 job keys (see lib.lua)
-- ARGV: 1 job id, 2 'approve' | 'reject', 3 who (JSON string), 4 note (JSON string or null),
--       5 the action hash the reviewer saw ('' = not given), 6 '1' when the type has an apply step,
--       7 now ms, 8 now RFC 3339, 9 retention ms
-- Returns {'ok', new status} | {'invalid', status} | {'hash_mismatch', action hash} | {'missing'}.
-- Guarantees: one decision per job. Of concurrent or repeated approvals exactly one succeeds, so an
-- apply step is queued at most once; an approval is bound to the action hash it names (optional);
-- the hash decided on is recorded (review_action_hash) whether or not the reviewer named it.
local id = ARGV[1]
local v, f = job_view(KEYS[1], {'status', 'action_hash', 'result'}, TRANSITION_READS)
if not f[1] then return {'missing'} end
if f[1] ~= 'needs_review' then return {'invalid', f[1]} end
if ARGV[5] ~= '' and ARGV[5] ~= f[2] then return {'hash_mismatch', f[2] or ''} end
local approve = ARGV[2] == 'approve'
local target, reason = 'canceled', 'rejected'
if approve then
  target, reason = 'completed', 'approved'
  if ARGV[6] == '1' then target = 'queued' end
end
local g = job_globals()
-- recorded before the transition so the status event and webhook see the decision
view_set(v, 'review_state', approve and 'approved' or 'rejected')
view_set(v, 'review_by', ARGV[3])
view_set(v, 'review_at', ARGV[8])
view_set(v, 'review_note', ARGV[4])
view_set(v, 'review_action_hash', f[2] or '')
if approve and ARGV[6] == '1' then view_set(v, 'phase', 'apply') end
local body = '"reason":"' .. reason .. '","by":' .. ARGV[3] .. ',"note":' .. ARGV[4]
local result = f[3]
if target == 'completed' and result and result ~= '' then body = body .. ',"result":' .. result end
local r, current = transition(v, KEYS[2], KEYS[3], g, target, {id = id, now = ARGV[7], at = ARGV[8],
  body = body, retention = ARGV[9]})
if r ~= 'ok' then
  view_save(v)
  return {r, current}
end
clear_deadline(v, g, id)
view_save(v)
return {'ok', target}
