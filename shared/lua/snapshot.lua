-- snapshot: what a client far behind gets instead of the events it missed: the job as of its newest
-- event (status, attempt, the length of the newest attempt's output so far, the newest status and
-- progress events), read in one step, so that all of it describes one instant. Reads only: the job
-- hash, the output text's length, and three stream entries looked up by id (never a scan), whatever
-- the length of the job. The text itself is not read here: through Lua a long text costs Redis
-- about 40 times a GETRANGE of it, which the caller does next (JobStore.snapshot: the text only
-- grows within an attempt, so its first `size` bytes are the text of this instant for as long as the
-- attempt has not moved on).
-- KEYS: 1 job, 2 events, 3 output text (the job's own keys: one hash tag)
-- ARGV: 1 the client's cursor ('' = none: it has nothing), 2 events after the cursor that are not far
--       behind (at most this many are replayed as they are), 3 bytes an event costs a client besides
--       its text
-- Far behind: more than ARGV 2 events after the cursor, and the snapshot is worth it: always when the
-- client holds none of the newest attempt's output (no cursor, or a cursor in an older attempt); with
-- a cursor in the newest attempt, when the output it holds already (which the snapshot sends again;
-- estimated from the share of the attempt's events before the cursor) is less than ARGV 3 bytes for
-- each event skipped.
-- Returns {'exact'} when the client is not far behind, or when the text does not cover the newest
-- attempt (text_covers, see start_text() in lib.lua: written by a version that kept none) or the job
-- is gone; else {'snapshot', status, attempt, seq, stream id, newest status event JSON ('' if none),
-- newest progress event JSON ('' if none), the text's length in bytes, the draft's length ('' when
-- there is none)}: the draft is the approved output an apply step's first attempt shows its own
-- after, at the start of the text, while that attempt is the newest.
local f = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'last_seq', 'emitted', 'text_covers', 'draft_bytes',
  'last_status_id', 'progress')
local status, attempt, last_seq = f[1], f[2], tonumber(f[3] or '0')
if not status then return {'exact'} end
local emitted = tonumber(f[4] or '0')
if attempt ~= '0' and f[5] ~= attempt .. ':' .. emitted then return {'exact'} end

-- the JSON of a stream entry (XRANGE's reply {id, {field, value, ...}}: the value of field d)
local function data_of(entry)
  local fields = entry[2]
  for i = 1, #fields, 2 do
    if fields[i] == 'd' then return fields[i + 1] end
  end
  return ''
end

local behind, cursor_attempt = last_seq, nil
if ARGV[1] ~= '' then
  -- the event at the cursor, or the first after it (a cursor need not be an entry's id)
  local at = redis.call('XRANGE', KEYS[2], ARGV[1], '+', 'COUNT', 1)[1]
  if not at then return {'exact'} end
  local data = data_of(at)
  local seq = tonumber(string.match(data, '"seq":(%d+)'))
  cursor_attempt = string.match(data, '"attempt":(%d+)')
  behind = last_seq - seq
  if at[1] ~= ARGV[1] then behind = behind + 1 end
end
if behind <= tonumber(ARGV[2]) then return {'exact'} end

local size = redis.call('STRLEN', KEYS[3])
local draft = tonumber(f[6] or '0')
if cursor_attempt == attempt and emitted > 0 then
  local skipped = math.min(behind, emitted)
  local held = draft + (size - draft) * (emitted - skipped) / emitted
  if held >= behind * tonumber(ARGV[3]) then return {'exact'} end
end

local newest = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)[1]
local status_event = ''
if f[7] then
  local entry = redis.call('XRANGE', KEYS[2], f[7], f[7])[1]
  if entry then status_event = data_of(entry) end
end
return {'snapshot', status, attempt, last_seq, newest[1], status_event, f[8] or '', size, f[6] or ''}
