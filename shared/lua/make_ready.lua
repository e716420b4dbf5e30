-- make_ready: a queued job waiting out a back-off may start now (an upstream said its work is done).
-- KEYS: the 14 job keys (see lib.lua)
-- ARGV: 1 job id, 2 now ms
-- Returns 'ready' or 'not_queued'.
-- Guarantees: only a queued job moves, and only earlier (never later than its own ready time).
local id, now = ARGV[1], tonumber(ARGV[2])
local f = redis.call('HMGET', KEYS[1], 'status', 'priority')
if f[1] ~= 'queued' then return 'not_queued' end
local g = job_globals()
-- in its priority's place (queue_score()): LT still moves it only earlier
redis.call('ZADD', g.queue, 'XX', 'LT', queue_score(now, f[2], now), id)
wake(g)
return 'ready'
