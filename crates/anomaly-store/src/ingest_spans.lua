-- Ingests a chunk of spans into the span key space; atomic per span (and per chunk).
-- KEYS[1] dirtyKeys, KEYS[2] keyIndex; then per span i: KEYS[4i-1] seen:{trace} (HASH of span
--   IDs), KEYS[4i] dur:{B}, KEYS[4i+1] base:{B} (field `v`, as in ingest.lua), KEYS[4i+2]
--   serviceKeys:{service} (the service's bodies, for its cap)
-- ARGV[1] dedup TTL ms, ARGV[2] window size, ARGV[3] retention ms (0 = keep), ARGV[4] key cap per
--   service (0 = none); then per span i: ARGV[3i+2] duration in whole microseconds (or `-`, as in
--   ingest.lua: marked seen, not added to its window), ARGV[3i+3] body B, ARGV[3i+4] span ID
-- Returns {accepted, duplicates, over_cardinality, outcomes}: outcomes has one character per
-- span, `a` accepted, `d` duplicate, `o` over the cap.
--
-- As in ingest.lua, nothing is repeated per span that once a chunk does: bodies join dirtyKeys,
-- keyIndex and their service's set once each at the end, a trace's marker gets its TTL when the
-- marker is created, and a service's set is only read when the chunk could reach its cap.
local ttl = ARGV[1]
local window = tonumber(ARGV[2])
local retention = tonumber(ARGV[3])
local cap = tonumber(ARGV[4])
local accepted, duplicates, over = 0, 0, 0
local outcomes = {}

-- Bodies accepted in this chunk, in order and as a set, with their window and baseline names.
local bodies, taken, touched = {}, {}, {}
-- Per service set: its size when last read, and the bodies accepted for it not yet added.
local sizes, fresh = {}, {}
-- Markers whose TTL this chunk has already seen to.
local marked = {}

local function sadd_from(key, list, from)
  for i = from, #list, 1000 do
    redis.call('SADD', key, unpack(list, i, math.min(i + 999, #list)))
  end
end

-- Whether a span of key `body` must be refused: the key is new and its service is at the cap.
local function over_cap(services, body)
  if cap == 0 or taken[body] then
    return false
  end
  if sizes[services] == nil then
    sizes[services] = redis.call('SCARD', services)
    fresh[services] = {}
  end
  if sizes[services] + #fresh[services] < cap then
    return false
  end
  sadd_from(services, fresh[services], 1)
  fresh[services] = {}
  sizes[services] = redis.call('SCARD', services)
  return sizes[services] >= cap and redis.call('SISMEMBER', services, body) == 0
end

for i = 1, (#KEYS - 2) / 4 do
  local seen, dur, base, services = KEYS[4 * i - 1], KEYS[4 * i], KEYS[4 * i + 1], KEYS[4 * i + 2]
  local micros, body, span = ARGV[3 * i + 2], ARGV[3 * i + 3], ARGV[3 * i + 4]
  if over_cap(services, body) then
    if redis.call('HEXISTS', seen, span) == 1 then
      duplicates = duplicates + 1
      outcomes[i] = 'd'
    else
      over = over + 1
      outcomes[i] = 'o'
    end
  elseif redis.call('HSETNX', seen, span, '1') == 0 then
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
      -- Kept with the cap off too, so turning it on counts every key.
      local list = fresh[services]
      if list == nil then
        list = {}
        fresh[services] = list
        if cap > 0 then
          sizes[services] = redis.call('SCARD', services)
        end
      end
      list[#list + 1] = body
    end
    accepted = accepted + 1
    outcomes[i] = 'a'
  end
  if outcomes[i] == 'a' and not marked[seen] then
    -- A trace's marker gets its TTL when it is created (once per chunk is enough).
    marked[seen] = true
    if redis.call('PTTL', seen) < 0 then
      redis.call('PEXPIRE', seen, ttl)
    end
  end
end

if #bodies > 0 then
  sadd_from(KEYS[1], bodies, 1)
  sadd_from(KEYS[2], bodies, 1)
  for services, list in pairs(fresh) do
    sadd_from(services, list, 1)
  end
  if retention > 0 then
    for _, name in ipairs(touched) do
      redis.call('PEXPIRE', name, retention)
    end
  end
end
return {accepted, duplicates, over, table.concat(outcomes)}
