-- webhook_claim: take up to n jobs whose webhook deliveries are due, each under a short in-flight
-- lease (its score moves into the future), so concurrent supervisors do not deliver one job's
-- events side by side and a crashed deliverer's job is picked up again when the lease passes.
-- KEYS: 1 webhook outbox (zset job id → due ms)
-- ARGV: 1 now ms, 2 in-flight lease ms, 3 n
-- Returns the claimed job ids.
local now = tonumber(ARGV[1])
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))
for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), id) end
return ids
