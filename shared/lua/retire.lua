-- retire: take finished jobs whose keys have expired out of their tenant's counts.
-- KEYS: 1 retiring, 2 counts
-- ARGV: 1 now ms, 2 at most this many jobs
-- Each `retiring` member is "<job id> <counts field>", scored by the ms the job's keys expire
-- (transition() in lib.lua adds it when the job finishes). Returns how many jobs were retired.
-- Guarantees: each finished job leaves its count once, however many supervisors run this at once.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, member in ipairs(due) do
  local space = string.find(member, ' ', 1, true)
  redis.call('HINCRBY', KEYS[2], string.sub(member, space + 1), -1)
  redis.call('ZREM', KEYS[1], member)
end
return #due
