-- Redis Cluster ingest, step 2 of 3 (see ingest.rs): stores samples of keys in ONE slot; atomic
-- per sample. The cap check and keyIndex (step 1) and dirtyKeys (step 3) live in the
-- coordination slot and are done by the caller around this script.
-- KEYS per sample i: KEYS[3i-2] the dedup marker in this slot (a STRING for a trace, a HASH of
--   span IDs for a span), KEYS[3i-1] dur:{B}, KEYS[3i] base:{B} (field `v`, as in ingest.lua)
-- ARGV[1] dedup TTL ms, ARGV[2] window size, ARGV[3] retention ms (0 = keep), ARGV[4] `r` for
--   traces or `s` for spans; then per sample i: ARGV[3+2i] duration in whole microseconds, or `-`
--   (marked seen, not added to its window; see ingest.lua), ARGV[4+2i] the span ID (spans)
-- Returns {accepted, duplicates, 0, outcomes}: one character per sample, `a` accepted, `d`
-- duplicate.
local ttl = ARGV[1]
local window = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])
local spans = ARGV[4] == 's'
local accepted, duplicates = 0, 0
local outcomes = {}
local touched, marked = {}, {}

for i = 1, #KEYS / 3 do
  local seen, dur, base = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local micros, span = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  local fresh
  if spans then
    fresh = redis.call('HSETNX', seen, span, '1') == 1
    if fresh and not marked[seen] then
      marked[seen] = true
      if redis.call('PTTL', seen) < 0 then
        redis.call('PEXPIRE', seen, ttl)
      end
    end
  else
    fresh = redis.call('SET', seen, '1', 'PX', ttl, 'NX') ~= false
  end
  if not fresh then
    duplicates = duplicates + 1
    outcomes[i] = 'd'
  else
    if micros ~= '-' then
      if redis.call('LPUSH', dur, micros) > window then
        redis.call('LTRIM', dur, 0, window - 1)
      end
      redis.call('HINCRBY', base, 'v', 1)
      if retention > 0 and not touched[dur] then
        touched[dur] = true
        redis.call('PEXPIRE', dur, retention)
        redis.call('PEXPIRE', base, retention)
      end
    end
    accepted = accepted + 1
    outcomes[i] = 'a'
  end
end
return {accepted, duplicates, 0, table.concat(outcomes)}
