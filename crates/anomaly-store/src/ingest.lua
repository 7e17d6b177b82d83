-- Ingests a chunk of traces; atomic per trace (and per chunk, as Redis never interleaves).
-- KEYS[1] dirtyKeys, KEYS[2] keyIndex; then per trace i: KEYS[3i] seen:{trace}, KEYS[3i+1] dur:{B},
--   KEYS[3i+2] base:{B} (its field `v` counts writes to the window; the recomputer only writes a
--   baseline computed from the window version it read, so a slow recompute never overwrites a
--   newer one)
-- ARGV[1] dedup TTL ms, ARGV[2] window size, ARGV[3] retention ms (0 = keep), ARGV[4] key cap (0 = none)
-- then per trace i: ARGV[3+2i] duration in whole microseconds, ARGV[4+2i] body B
-- Returns {accepted, duplicates, over_cardinality}.
local ttl = ARGV[1]
local window = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local accepted, duplicates, over = 0, 0, 0
for i = 1, (#KEYS - 2) / 3 do
  local seen, dur, base = KEYS[3 * i], KEYS[3 * i + 1], KEYS[3 * i + 2]
  local micros, body = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  if redis.call('EXISTS', seen) == 1 then
    duplicates = duplicates + 1
  elseif cap > 0 and redis.call('SISMEMBER', KEYS[2], body) == 0
      and redis.call('SCARD', KEYS[2]) >= cap then
    -- A new key beyond the cap: not stored and not marked seen.
    over = over + 1
  else
    redis.call('SET', seen, '1', 'PX', ttl)
    redis.call('LPUSH', dur, micros)
    redis.call('LTRIM', dur, 0, window - 1)
    redis.call('HINCRBY', base, 'v', 1)
    if retention > 0 then
      redis.call('PEXPIRE', dur, retention)
      redis.call('PEXPIRE', base, retention)
    end
    redis.call('SADD', KEYS[2], body)
    redis.call('SADD', KEYS[1], body)
    accepted = accepted + 1
  end
end
return {accepted, duplicates, over}
