-- Ingests a chunk of traces; atomic per trace (and per chunk, as Redis never interleaves).
-- KEYS[1] dirtyKeys, KEYS[2] keyIndex; then per trace i: KEYS[3i] seen:{trace}, KEYS[3i+1] dur:{B},
--   KEYS[3i+2] base:{B} (its field `v` counts writes to the window; the recomputer only writes a
--   baseline computed from the window version it read, so a slow recompute never overwrites a
--   newer one)
-- ARGV[1] dedup TTL ms, ARGV[2] window size, ARGV[3] retention ms (0 = keep), ARGV[4] key cap (0 = none)
-- then per trace i: ARGV[3+2i] duration in whole microseconds, or `-` for a trace to mark seen
-- without adding it to its window (judged anomalous with stats.exclude_anomalies), ARGV[4+2i] body B
-- Returns {accepted, duplicates, over_cardinality, outcomes}: outcomes has one character per
-- trace, `a` accepted, `d` duplicate, `o` over the cap.
--
-- Redis calls are what ingest costs, so none is repeated where once a chunk does: the chunk's
-- keys join dirtyKeys and keyIndex in one SADD each at the end and have their expiry refreshed
-- once each, and keyIndex is only consulted for a key when the chunk could reach the cap. An
-- accepted trace costs SET NX, LPUSH, LTRIM (once the window is full) and HINCRBY.
local ttl = ARGV[1]
local window = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local accepted, duplicates, over = 0, 0, 0
local outcomes = {}

-- Bodies accepted in this chunk, in order and as a set, with their window and baseline names.
local bodies, taken, touched = {}, {}, {}
-- keyIndex's size when last read, and how many of `bodies` were added to it since.
local indexed, added = 0, 0
if cap > 0 then
  indexed = redis.call('SCARD', KEYS[2])
end

-- SADD of list[from..] in slices (unpack has a stack limit).
local function sadd_from(key, list, from)
  for i = from, #list, 1000 do
    redis.call('SADD', key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- Whether a trace of key `body` must be refused by the cap: the key is new and keyIndex is full.
local function over_cap(body)
  if cap == 0 or taken[body] or indexed + (#bodies - added) < cap then
    return false
  end
  -- Possibly at the cap: bring keyIndex up to date and look exactly.
  sadd_from(KEYS[2], bodies, added + 1)
  added = #bodies
  indexed = redis.call('SCARD', KEYS[2])
  return indexed >= cap and redis.call('SISMEMBER', KEYS[2], body) == 0
end

for i = 1, (#KEYS - 2) / 3 do
  local seen, dur, base = KEYS[3 * i], KEYS[3 * i + 1], KEYS[3 * i + 2]
  local micros, body = ARGV[3 + 2 * i], ARGV[4 + 2 * i]
  if over_cap(body) then
    -- Not stored and not marked seen (unless it was already).
    if redis.call('EXISTS', seen) == 1 then
      duplicates = duplicates + 1
      outcomes[i] = 'd'
    else
      over = over + 1
      outcomes[i] = 'o'
    end
  elseif not redis.call('SET', seen, '1', 'PX', ttl, 'NX') then
    duplicates = duplicates + 1
    outcomes[i] = 'd'
  elseif micros == '-' then
    accepted = accepted + 1
    outcomes[i] = 'a'
  else
    if redis.call('LPUSH', dur, micros) > window then
      redis.call('LTRIM', dur, 0, window - 1)
    end
    redis.call('HINCRBY', base, 'v', 1)
    if not taken[body] then
      taken[body] = true
      bodies[#bodies + 1] = body
      touched[#touched + 1] = dur
      touched[#touched + 1] = base
    end
    accepted = accepted + 1
    outcomes[i] = 'a'
  end
end

if #bodies > 0 then
  sadd_from(KEYS[1], bodies, 1)
  sadd_from(KEYS[2], bodies, added + 1)
  if retention > 0 then
    for _, name in ipairs(touched) do
      redis.call('PEXPIRE', name, retention)
    end
  end
end
return {accepted, duplicates, over, table.concat(outcomes)}
