-- beat: a worker process says it is alive, once per shard and heartbeat (shared/liveness.py): every
-- job it runs in the shard stays leased to it while it beats.
-- KEYS: 1 workers, 2 the worker's notices; of one shard
-- ARGV: 1 worker id, 2 alive until (ms: now + the lease)
-- Returns the notices left for it since its last beat, each once: 'cancel <job id>' (a cancel it may
-- have missed on pub/sub), 'lost <job id> <token>' (the supervisor took the job over while the worker
-- was thought dead: that attempt must stop).
-- Guarantees: a beat never moves the worker's entry back (GT), so a beat that reaches Redis late (sent
-- before an outage, run after it) cannot shorten what a newer one said.
redis.call('ZADD', KEYS[1], 'GT', ARGV[2], ARGV[1])
local notices = redis.call('SMEMBERS', KEYS[2])
if #notices > 0 then redis.call('DEL', KEYS[2]) end
return notices
