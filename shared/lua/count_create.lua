-- count_create: count one job creation against the tenant's limit for this window. Used on a Cluster,
-- where the tenant's counter lives in its own shard, not in the shard of the job (on one Redis,
-- create.lua counts it in the same script).
-- KEYS: 1 the tenant's creation counter of this rate window
-- ARGV: 1 creations allowed in the window, 2 how long the counter is kept (ms)
-- Returns 1 when the tenant is over its limit (the refused request is counted too), else 0.
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if count > tonumber(ARGV[1]) then return 1 end
return 0
