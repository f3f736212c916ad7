-- renew: a replica's lease in the registry of replicas, renewed every few
-- seconds: one operation per replica, whatever its connections (an idle
-- connection costs Redis nothing).
-- KEYS[1] the registry, KEYS[2] the replicas' hosts. ARGV: replica,
-- lease ms, host ("" none).
-- Returns {now ms, 1 if the lease had lapsed or was missing}: the replica
-- then reaps itself and re-asserts its live connections (a pause longer than
-- the lease, a Redis that restarted empty).
local now = now_ms()
local prev = redis.call('ZSCORE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[1], now + num(ARGV[2]), ARGV[1])
if ARGV[3] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[3]) end
if not prev or num(prev) < now then return {now, 1} end
return {now, 0}
