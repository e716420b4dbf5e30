-- record: fenced write of what an attempt records besides its output: a step's stored result, one span
-- of the trace, the usage of one model call, and the events that go with them (step events, and the
-- output a replayed step emits again).
-- KEYS: 1 job, 2 events, 3 stats, 4 steps, 5 trace, 6 counts (of the job's shard)
-- ARGV: 1 token, 2 index of this record within the attempt (0, 1, 2, … counted by the writer),
--       3 steps field ('' = none), 4 its value (JSON), 5 span id ('' = none), 6 the span (JSON),
--       7 model of a model call ('' = no usage recorded), 8 the step it was made in (`<name>#<n>`, or
--       '-' outside any step), 9 input tokens, 10 cached input tokens, 11 output tokens, 12 its cost in
--       nano-USD ('' = the model has no price), then pairs (event type, JSON members without braces)
-- Returns the number of events the attempt has written, or an error reply 'STALE ...' (counted in
-- stats.stale_writes) or 'GAP ...' (the index is past what the attempt has recorded).
-- Usage goes to the job hash twice, in total (`usage:FIELD`) and for the attempt
-- (`usage:N:FIELD`): input_tokens, cached_tokens, output_tokens, calls, cost_nusd, unpriced_calls,
-- and unpriced_models (",m1,m2,"). A call made in a step an earlier attempt already paid for is counted
-- as paid twice for this attempt (`usage:N:repaid_calls`, `_tokens`, `_cost_nusd`). The shard's counts
-- get `tokens|TYPE|KIND`, `model_tokens|TYPE|MODEL|KIND`, `model_calls|TYPE|MODEL` and
-- `cost_nusd|TYPE|MODEL` for /metrics, and `tenant_usage|TENANT|TYPE|calls|tokens|cost_nusd` (ever) for
-- GET /v1/jobs/counts.
-- Guarantees: only the attempt holding the lease records anything; a record sent again (a client
-- retry after a lost reply) changes nothing more: its usage is counted once, its events written once.
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token', 'attempt', 'emitted', 'type', 'tenant')
if not fenced(f, ARGV[1], KEYS[3], 'stale_writes') then
  return redis.error_reply('STALE lease token ' .. ARGV[1] .. ' no longer holds this job')
end
local attempt, jtype = f[3], f[5]
local emitted = tonumber(f[4] or '0')
local counter = 'attempt:' .. attempt .. ':records'
local done = tonumber(redis.call('HGET', KEYS[1], counter) or '0')
local index = tonumber(ARGV[2])
if index < done then return emitted end
if index > done then
  return redis.error_reply('GAP record ' .. index .. ' but the attempt has recorded ' .. done)
end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[4], ARGV[3], ARGV[4]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[5], ARGV[5], ARGV[6]) end
local model = ARGV[7]
if model ~= '' then
  local input, cached, output = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
  local cost = ARGV[12]
  local paid = 'paid:' .. ARGV[8]
  local first = redis.call('HGET', KEYS[4], paid)
  if not first then redis.call('HSET', KEYS[4], paid, attempt) end
  for _, scope in ipairs({'usage:', 'usage:' .. attempt .. ':'}) do
    redis.call('HINCRBY', KEYS[1], scope .. 'input_tokens', input)
    redis.call('HINCRBY', KEYS[1], scope .. 'cached_tokens', cached)
    redis.call('HINCRBY', KEYS[1], scope .. 'output_tokens', output)
    redis.call('HINCRBY', KEYS[1], scope .. 'calls', 1)
    if cost ~= '' then
      redis.call('HINCRBY', KEYS[1], scope .. 'cost_nusd', cost)
    else
      redis.call('HINCRBY', KEYS[1], scope .. 'unpriced_calls', 1)
      local models = redis.call('HGET', KEYS[1], scope .. 'unpriced_models') or ','
      if not string.find(models, ',' .. model .. ',', 1, true) then
        redis.call('HSET', KEYS[1], scope .. 'unpriced_models', models .. model .. ',')
      end
    end
  end
  if first and first ~= attempt then
    local scope = 'usage:' .. attempt .. ':repaid_'
    redis.call('HINCRBY', KEYS[1], scope .. 'calls', 1)
    redis.call('HINCRBY', KEYS[1], scope .. 'tokens', input + output)
    if cost ~= '' then redis.call('HINCRBY', KEYS[1], scope .. 'cost_nusd', cost) end
  end
  for _, kn in ipairs({{'input_tokens', input}, {'cached_tokens', cached}, {'output_tokens', output}}) do
    local kind, n = kn[1], kn[2]
    if n > 0 then
      redis.call('HINCRBY', KEYS[6], 'tokens|' .. jtype .. '|' .. kind, n)
      redis.call('HINCRBY', KEYS[6], 'model_tokens|' .. jtype .. '|' .. model .. '|' .. kind, n)
    end
  end
  redis.call('HINCRBY', KEYS[6], 'model_calls|' .. jtype .. '|' .. model, 1)
  if cost ~= '' then redis.call('HINCRBY', KEYS[6], 'cost_nusd|' .. jtype .. '|' .. model, cost) end
  if f[6] and f[6] ~= '' then
    local spent = 'tenant_usage|' .. f[6] .. '|' .. jtype .. '|'
    redis.call('HINCRBY', KEYS[6], spent .. 'calls', 1)
    redis.call('HINCRBY', KEYS[6], spent .. 'tokens', input + output)
    if cost ~= '' then redis.call('HINCRBY', KEYS[6], spent .. 'cost_nusd', cost) end
  end
end
for i = 13, #ARGV, 2 do
  append_event(KEYS[1], KEYS[2], ARGV[i], attempt, ARGV[i + 1])
  emitted = emitted + 1
end
redis.call('HSET', KEYS[1], 'emitted', emitted, counter, done + 1)
return emitted
