-- admit: one call to a named resource (shared/resources.py) asks to go now; the requests and tokens of
-- a sliding window, a pause after a Retry-After and the breaker decide, for every worker and API
-- process at once.
-- KEYS: 1 calls (ZSET '<call id>:<tokens>' → ms admitted), 2 state (HASH), 3 waiting (ZSET job id → ms);
--       all of the resource's own slot ({r:NAME})
-- ARGV: 1 now ms, 2 call id (unique per call), 3 tokens the call is expected to use (≥ 0),
--       4 requests per window ('' = no limit), 5 tokens per window ('' = no limit), 6 window ms,
--       7 the job asking ('' = none), 8 '1' when that job was refused before (it leaves `waiting`),
--       9 how long a breaker probe may take (ms) before another caller may probe
-- Returns {0, member, failures} admitted: member ('<call id>:<tokens>') is what settle.lua takes,
--         failures the transient failures in a row so far ('probe': this call is the breaker's probe);
--         or {wait ms, reason} refused, reason 'paused' | 'breaker' | 'requests' | 'tokens': ask again
--         after the wait (a probe's wait is at most 1 s: it may end early).
-- Guarantees: over any window of ARGV 6 ms, at most ARGV 4 calls are admitted and at most ARGV 5 tokens
-- (as estimated, then as settled); nothing is admitted while paused or while the breaker is open; once
-- the open time has passed one call at a time (the probe) is admitted until one succeeds.
-- A call is admitted once: a resend after a lost reply is admitted again (one more call counted).
local now, id, want = tonumber(ARGV[1]), ARGV[2], math.max(0, tonumber(ARGV[3]))
local max_requests, max_tokens, window = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local job = ARGV[7]
local s = redis.call('HMGET', KEYS[2], 'paused_until', 'breaker', 'open_until', 'probe_until', 'tokens',
  'admitted', 'failures', 'tokens_total')

local function refuse(wait, reason)
  redis.call('HINCRBY', KEYS[2], 'waits|' .. reason, 1)
  if job ~= '' then
    -- known to wait until a little after it asks again; entries of jobs that stopped asking fall out
    redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
    redis.call('ZADD', KEYS[3], now + wait + 2000, job)
  end
  return {math.max(1, math.floor(wait)), reason}
end

local paused = tonumber(s[1] or 0)
if paused > now then return refuse(paused - now, 'paused') end
local probe = false
if s[2] == 'open' then
  local open_until = tonumber(s[3] or 0)
  if open_until > now then return refuse(open_until - now, 'breaker') end
  probe = true
elseif s[2] == 'half_open' then
  local probe_until = tonumber(s[4] or 0)
  if probe_until > now then return refuse(math.min(1000, probe_until - now), 'breaker') end
  probe = true  -- the last probe took too long (its worker died?): another one goes
end

local limited = max_requests or max_tokens
local tokens = tonumber(s[5] or 0)
if limited then
  -- the window is (now - window, now]: calls admitted at or before now - window have left it
  local cutoff = now - window
  local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', cutoff)
  if #gone > 0 then
    for _, m in ipairs(gone) do tokens = tokens - tonumber(string.match(m, ':(%d+)$')) end
    redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', cutoff)
    if tokens < 0 then tokens = 0 end
  end
  if max_requests then
    local count = redis.call('ZCARD', KEYS[1])
    if count >= max_requests then
      -- the call that must leave for one more to fit
      local r = redis.call('ZRANGE', KEYS[1], count - max_requests, count - max_requests, 'WITHSCORES')
      if #gone > 0 then redis.call('HSET', KEYS[2], 'tokens', tokens) end
      return refuse(tonumber(r[2]) + window - now, 'requests')
    end
  end
  if max_tokens then
    -- a call estimated above the whole budget goes when the window is empty
    local need = math.min(want, max_tokens)
    if tokens + need > max_tokens then
      if #gone > 0 then redis.call('HSET', KEYS[2], 'tokens', tokens) end
      local r = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
      local left = tokens
      for i = 1, #r, 2 do
        left = left - tonumber(string.match(r[i], ':(%d+)$'))
        if left + need <= max_tokens then return refuse(tonumber(r[i + 1]) + window - now, 'tokens') end
      end
      return refuse(window, 'tokens')
    end
  end
end

local member = id .. ':' .. want
local sets = {'admitted', tonumber(s[6] or 0) + 1}
if limited then
  redis.call('ZADD', KEYS[1], now, member)
  sets[#sets + 1] = 'tokens'
  sets[#sets + 1] = tokens + want
end
if probe then
  for _, x in ipairs({'breaker', 'half_open', 'probe', id, 'probe_until', now + tonumber(ARGV[9])}) do
    sets[#sets + 1] = x
  end
end
if want > 0 then
  sets[#sets + 1] = 'tokens_total'
  sets[#sets + 1] = tonumber(s[8] or 0) + want
end
redis.call('HSET', KEYS[2], unpack_(sets))
if job ~= '' and ARGV[8] == '1' then redis.call('ZREM', KEYS[3], job) end
return {0, member, probe and 'probe' or (s[7] or '0')}
