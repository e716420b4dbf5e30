-- reserve: before a take, a worker reserves up to n places of a resource's concurrency (the running
-- jobs that use it, over every worker); take.lua then starts at most that many of its jobs.
-- KEYS: 1 held (ZSET member → ms its hold lasts), 2 state; of the resource's own slot ({r:NAME})
-- ARGV: 1 now ms, 2 worker id, 3 n wanted, 4 concurrency ('' = no limit), 5 hold ms
-- Returns {granted, reason, until}: granted places, held as 'rsv:<worker>:<i>' (i = 1..granted) until
-- now + hold; reason '' or why fewer were granted ('concurrency', 'paused', 'breaker'), until the ms a
-- pause or an open breaker ends ('' otherwise). Nothing is granted while the resource is paused or its
-- breaker is open: its jobs stay queued. A refusal marks the resource `wanted`, so the next release
-- wakes the workers (release.lua).
-- Guarantees: held members (unexpired) never outnumber the concurrency.
local now, worker, want, hold = tonumber(ARGV[1]), ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[5])
local s = redis.call('HMGET', KEYS[2], 'paused_until', 'breaker', 'open_until')
local function refuse(reason, untl)
  redis.call('HSET', KEYS[2], 'wanted', 1)
  redis.call('HINCRBY', KEYS[2], 'waits|' .. reason, 1)
  return {0, reason, untl}
end
if tonumber(s[1] or 0) > now then return refuse('paused', s[1]) end
if s[2] == 'open' and tonumber(s[3] or 0) > now then return refuse('breaker', s[3]) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local grant, reason = want, ''
local limit = tonumber(ARGV[4])
if limit then
  grant = math.max(0, math.min(want, limit - redis.call('ZCARD', KEYS[1])))
  if grant == 0 then return refuse('concurrency', '') end
  if grant < want then redis.call('HSET', KEYS[2], 'wanted', 1) end
end
local members = {}
for i = 1, grant do
  members[#members + 1] = now + hold
  members[#members + 1] = 'rsv:' .. worker .. ':' .. i
end
if grant > 0 then redis.call('ZADD', KEYS[1], unpack_(members)) end
return {grant, reason, ''}
