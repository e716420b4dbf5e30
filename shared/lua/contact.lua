-- contact: a supervisor's touch of one shard, timed by Redis's own clock (TIME), so that every
-- supervisor measures the same silence whatever its own clock says (compute/supervisor/contact.py).
-- KEYS: 1 the shard's contact hash (fields `seen`: ms of the last touch by any supervisor,
--       `grace_until`: ms until which no lease of the shard is taken over)
-- ARGV: 1 gap ms: no touch for longer than this means Redis was out of reach (or no supervisor ran),
--       2 grace ms: how long every lease then gets, from now, to be renewed
-- Returns {ms of grace left (0: none), ms since the last touch (0 on the very first)}.
-- Guarantees: the first touch after a silence longer than the gap starts the grace, whichever
-- supervisor makes it; a grace is only ever extended.
-- TIME, then writes: replicate the effects (the default since Redis 7; the in-process fallback lacks it)
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local f = redis.call('HMGET', KEYS[1], 'seen', 'grace_until')
local seen, grace = tonumber(f[1] or '0'), tonumber(f[2] or '0')
local silence = 0
if seen > 0 then silence = math.max(0, now - seen) end
if seen > 0 and silence > tonumber(ARGV[1]) and now + tonumber(ARGV[2]) > grace then
  grace = now + tonumber(ARGV[2])
  redis.call('HSET', KEYS[1], 'grace_until', grace)
end
redis.call('HSET', KEYS[1], 'seen', now)
return {math.max(0, grace - now), silence}
