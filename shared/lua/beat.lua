-- beat: a worker process says it is alive, once per shard and heartbeat (shared/liveness.py): every
-- job it runs in the shard stays leased to it while it beats.
-- KEYS: 1 workers, 2 the worker's notices, 3 (only when it publishes) the worker's info; of one shard
-- ARGV: 1 worker id, 2 alive until (ms: now + the lease), with KEYS 3: 3 how long the info lives (ms),
--       4.. its field/value pairs (shared/worker_info.py: every field, so the hash is whole after a write)
-- Returns the notices left for it since its last beat, each once: 'cancel <job id>' (a cancel it may
-- have missed on pub/sub), 'lost <job id> <token>' (the supervisor took the job over while the worker
-- was thought dead: that attempt must stop).
-- Guarantees: a beat never moves the worker's entry back (GT), so a beat that reaches Redis late (sent
-- before an outage, run after it) cannot shorten what a newer one said.
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
if KEYS[3] then
  redis.call('HSET', KEYS[3], unpack_(ARGV, 4))
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
local notices = redis.call('SMEMBERS', KEYS[2])
if #notices > 0 then redis.call('DEL', KEYS[2]) end
return notices
