-- retire: remove a reaped replica from the registry, unless it renewed its
-- lease meanwhile (compare-and-swap on the lapse it was reaped for).
-- KEYS[1] the registry, KEYS[2] the replicas' hosts. ARGV: replica, lapse
-- ms. Returns 1 when removed.
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and num(s) == num(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
