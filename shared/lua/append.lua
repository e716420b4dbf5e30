-- append: fenced write of output/progress events by the attempt holding the lease.
-- KEYS: job, events, stats, output text
-- ARGV: 1 token, 2 index of this batch's first event within the attempt (0, 1, 2, … counted by the
--       writer), then pairs of (event type, JSON members without braces)
-- Returns the number of events this attempt has written, or an error reply 'STALE ...' (counted in
-- stats.stale_writes).
-- Guarantees: seq is consecutive per job; a zombie attempt cannot add a single event; a batch sent
-- again (a client retry after a lost reply) writes only the events not written yet, so retries
-- never repeat output. The text of the output events goes onto the output text, which stays covered
-- ('A:E' in text_covers, see start_text() in lib.lua) only as long as it was before; the newest
-- progress event's JSON is kept in the job field `progress`. Both are what snapshot.lua reads.
local f = redis.call('HMGET', KEYS[1], 'status', 'lease_token', 'attempt', 'emitted', 'text_covers')
if not fenced(f, ARGV[1], KEYS[3], 'stale_writes') then
  return redis.error_reply('STALE lease token ' .. ARGV[1] .. ' no longer holds this job')
end
local emitted = tonumber(f[4] or '0')
local index = tonumber(ARGV[2])
if index > emitted then
  return redis.error_reply('GAP batch starts at ' .. index .. ' but the attempt has written ' .. emitted)
end

-- The text of an output event from its members: a lone `"text":"…"` without a backslash or a quote
-- inside (most tokens) is taken as written; anything else is decoded. nil when there is no text string
-- (or the members do not decode): the text can no longer be kept.
local function output_text(body)
  if string.sub(body, 1, 8) == '"text":"' and string.find(body, '["\\]', 9) == #body then
    return string.sub(body, 9, -2)
  end
  local ok, decoded = pcall(cjson.decode, '{' .. body .. '}')
  if ok and type(decoded) == 'table' and type(decoded.text) == 'string' then return decoded.text end
  return nil
end

local covered = f[5] == f[3] .. ':' .. emitted
local texts, progress = {}, nil
for i = 3, #ARGV, 2 do
  if index >= emitted then
    local etype = ARGV[i]
    local _, _, data = append_event(KEYS[1], KEYS[2], etype, f[3], ARGV[i + 1])
    emitted = emitted + 1
    if etype == 'output' and covered then
      local text = output_text(ARGV[i + 1])
      if text then texts[#texts + 1] = text else covered = false end
    elseif etype == 'progress' then
      progress = data
    end
  end
  index = index + 1
end
local fields = {'emitted', emitted}
if covered then
  if #texts > 0 then redis.call('APPEND', KEYS[4], table.concat(texts)) end
  fields[3], fields[4] = 'text_covers', f[3] .. ':' .. emitted
elseif f[5] then
  redis.call('HDEL', KEYS[1], 'text_covers')
end
if progress then
  fields[#fields + 1] = 'progress'
  fields[#fields + 1] = progress
end
redis.call('HSET', KEYS[1], unpack_(fields))
return emitted
