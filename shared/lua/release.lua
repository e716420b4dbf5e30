-- release: a worker's places of a resource's concurrency change hands: its reservations end, the
-- jobs it started hold their own place, the jobs that ended give theirs back.
-- KEYS: 1 held, 2 state; of the resource's own slot ({r:NAME})
-- ARGV: 1 until ms (now + hold) for the new holders, 2 the worker id, 3 reservations to drop
--       (rsv:<worker>:1..n), 4 how many members follow to hold, then those members (job id:token),
--       then members to drop
-- Returns 1 when a worker was refused a place since the last release that freed one (the caller wakes
-- the workers of the types using the resource), else 0.
local untl, worker, reserved, adds = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local drop = {}
for i = 1, reserved do drop[#drop + 1] = 'rsv:' .. worker .. ':' .. i end
for i = 5 + adds, #ARGV do drop[#drop + 1] = ARGV[i] end
if #drop > 0 then redis.call('ZREM', KEYS[1], unpack_(drop)) end
local hold = {}
for i = 5, 4 + adds do
  hold[#hold + 1] = untl
  hold[#hold + 1] = ARGV[i]
end
if #hold > 0 then redis.call('ZADD', KEYS[1], unpack_(hold)) end
-- a place was freed (more dropped than now held): a worker turned away may take now
if #drop > adds and redis.call('HDEL', KEYS[2], 'wanted') == 1 then return 1 end
return 0
