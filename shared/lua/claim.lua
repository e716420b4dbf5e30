-- claim: take the job that has been ready longest from the given queues and put it under a
-- provisional lease. The worker then runs `start` on the job's own keys; if it dies in between,
-- the provisional lease expires and the supervisor puts the still-queued job back.
-- KEYS: leases, queue(type 1), queue(type 2), ...
-- ARGV: 1 now ms, 2 lease ms
-- The queue's order is its scores' (priority included); a job is ready by its own time (ready_of()).
-- Returns {job id, the queue key it came from} when claimed (so the worker knows the job's type
-- without reading the job), {'', next ready ms} when only future work is queued, {'', ''} when empty.
local now = tonumber(ARGV[1])
local best, best_key, best_score
for i = 2, #KEYS do
  local r = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
  if r[1] and (not best_score or tonumber(r[2]) < best_score) then
    best, best_key, best_score = r[1], KEYS[i], tonumber(r[2])
  end
end
if not best then return {'', ''} end
if ready_of(best_score) > now then return {'', tostring(ready_of(best_score))} end
redis.call('ZREM', best_key, best)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), best)
return {best, best_key}
