-- make_ready: a queued job waiting out a back-off may start now (an upstream said its work is done).
-- KEYS: the 14 job keys (see lib.lua)
-- ARGV: 1 job id, 2 now ms
-- Returns 'ready' or 'not_queued'.
-- Guarantees: only a queued job moves, and only earlier (never later than its own ready time).
local id, now = ARGV[1], tonumber(ARGV[2])
if redis.call('HGET', KEYS[1], 'status') ~= 'queued' then return 'not_queued' end
local g = job_globals()
redis.call('ZADD', g.queue, 'XX', 'LT', now, id)
wake(g)
return 'ready'
