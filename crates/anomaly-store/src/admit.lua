-- Redis Cluster ingest, step 1 of 3 (see ingest.rs): admits a batch's keys under the cardinality
-- caps and records them in keyIndex (and, for spans, their service's set), all in the
-- coordination slot. A key admitted here whose sample then fails to store has an empty window;
-- the prune sweep drops it from the index.
-- KEYS[1] keyIndex, KEYS[2..] serviceKeys sets (span key space)
-- ARGV[1] cap on keyIndex (0 = none), ARGV[2] cap per service set (0 = none); then per key:
--   ARGV[2i+1] body B, ARGV[2i+2] the index in KEYS of its service set (0 = none)
-- Returns one character per key: `y` admitted, `n` refused by a cap.
local cap, service_cap = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local body, s = ARGV[i], tonumber(ARGV[i + 1])
  local ok = true
  if cap > 0 and redis.call('SISMEMBER', KEYS[1], body) == 0 then
    ok = redis.call('SCARD', KEYS[1]) < cap
  end
  if ok and s > 0 and service_cap > 0 and redis.call('SISMEMBER', KEYS[s], body) == 0 then
    ok = redis.call('SCARD', KEYS[s]) < service_cap
  end
  if ok then
    redis.call('SADD', KEYS[1], body)
    if s > 0 then
      redis.call('SADD', KEYS[s], body)
    end
    out[#out + 1] = 'y'
  else
    out[#out + 1] = 'n'
  end
end
return table.concat(out)
