-- settle: how an admitted call (admit.lua) went: its real token count, and its outcome for the pause
-- and the breaker.
-- KEYS: 1 calls, 2 state; of the resource's own slot ({r:NAME})
-- ARGV: 1 now ms, 2 the member admit.lua answered ('<call id>:<estimate>'), 3 the real tokens
--       ('' = as estimated), 4 outcome: 'ok' | 'fail' (a transient failure) | 'pause' (a Retry-After:
--       every caller waits until ARGV 5) | 'none' (the call ended otherwise) | '' (tokens only),
--       5 paused until ms (for 'pause'), 6 failures in a row that open the breaker, 7 how long it
--       stays open (ms)
-- Returns {paused until ms, breaker state ('closed' | 'open' | 'half_open'), open until ms}; for
-- outcome '' (tokens only) {0, '', 0}.
-- Guarantees: the window's token sum follows the real count (while the call is still in the window);
-- a success resets the failures and, from the probe, closes the breaker; ARGV 6 failures in a row, or
-- a failed probe, open it for ARGV 7 ms; a pause only ever moves later.
local now, member, outcome = tonumber(ARGV[1]), ARGV[2], ARGV[4]
local id, estimate = string.match(member, '^(.*):(%d+)$')
estimate = tonumber(estimate)
if ARGV[3] ~= '' then
  local real = math.max(0, tonumber(ARGV[3]))
  if real ~= estimate then
    local score = redis.call('ZSCORE', KEYS[1], member)
    if score then
      redis.call('ZREM', KEYS[1], member)
      redis.call('ZADD', KEYS[1], score, id .. ':' .. real)
      redis.call('HINCRBY', KEYS[2], 'tokens', real - estimate)
    end
    redis.call('HINCRBY', KEYS[2], 'tokens_total', real - estimate)
  end
end
if outcome == '' then return {0, '', 0} end  -- tokens only: the caller needs no state
local s = redis.call('HMGET', KEYS[2], 'paused_until', 'breaker', 'open_until', 'probe', 'failures')
local paused, breaker, open_until = tonumber(s[1] or 0), s[2] or 'closed', tonumber(s[3] or 0)
local is_probe = s[4] == id
local function open()
  breaker, open_until = 'open', now + tonumber(ARGV[7])
  redis.call('HSET', KEYS[2], 'breaker', breaker, 'open_until', open_until)
  redis.call('HDEL', KEYS[2], 'probe', 'probe_until')
  redis.call('HINCRBY', KEYS[2], 'breaker_opens', 1)
end
if outcome == 'ok' then
  if s[5] and s[5] ~= '0' then redis.call('HSET', KEYS[2], 'failures', 0) end
  if is_probe then
    breaker = 'closed'
    redis.call('HSET', KEYS[2], 'breaker', breaker)
    redis.call('HDEL', KEYS[2], 'probe', 'probe_until', 'open_until')
    open_until = 0
  end
elseif outcome == 'fail' then
  local failures = redis.call('HINCRBY', KEYS[2], 'failures', 1)
  if is_probe or (breaker == 'closed' and failures >= tonumber(ARGV[6])) then open() end
elseif outcome == 'pause' then
  local untl = tonumber(ARGV[5])
  if untl > paused then
    paused = untl
    redis.call('HSET', KEYS[2], 'paused_until', paused)
  end
  redis.call('HINCRBY', KEYS[2], 'pauses', 1)
  if is_probe then redis.call('HDEL', KEYS[2], 'probe', 'probe_until') end
elseif outcome == 'none' and is_probe then
  redis.call('HDEL', KEYS[2], 'probe', 'probe_until')
end
return {paused, breaker, open_until}
