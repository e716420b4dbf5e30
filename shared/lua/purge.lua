-- purge: deletes a finished job and everything kept for it (DELETE /v1/jobs/{id}).
-- KEYS: 1-14 as every per-job script (JobStore.job_keys), 15 the tenant's list index in the job's
--       shard, 16 the job's webhook delivery log
-- ARGV: 1 job id, 2 the tenant asking
-- Returns {'ok'}, {'missing'} (no such job, or another tenant's) or {'invalid', status} (not finished:
-- cancel it first).
-- Guarantees: only a finished job goes, and all of it at once: its hash, stream, checkpoint, stored
-- steps, trace, output text and delivery log, its entries in the list, lease, deadline, queue and webhook indexes, and its place in its
-- tenant's counts (taken out now rather than when its keys would have expired: retire.lua).
local g = job_globals()
local id, tenant = ARGV[1], ARGV[2]
local found = redis.call('HMGET', KEYS[1], 'status', 'tenant', 'type')
local status, owner, jtype = found[1], found[2], found[3]
if not status or owner ~= tenant then return {'missing'} end
if not TERMINAL[status] then return {'invalid', status} end
local counted = id .. ' tenant|' .. tenant .. '|' .. jtype .. '|' .. status
if redis.call('ZREM', g.retiring, counted) == 1 then
  redis.call('HINCRBY', g.counts, string.sub(counted, #id + 2), -1)
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], g.steps, g.trace, g.text, KEYS[16])
redis.call('ZREM', KEYS[15], id)
for _, index in ipairs({g.leases, g.queue, g.deadlines, g.webhooks}) do redis.call('ZREM', index, id) end
return {'ok'}
