-- close: a replica's connection of a session ended.
-- KEYS[1] session hash. ARGV: prefix, sid, replica, forget after ms.
-- Returns the session's live connections left, on all replicas.
local p, sid, rid, forget = ARGV[1], ARGV[2], ARGV[3], num(ARGV[4])
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then return 0 end
local now = now_ms()
if redis.call('HINCRBY', h, 'c:' .. rid, -1) <= 0 then
  redis.call('HDEL', h, 'c:' .. rid)
  redis.call('SREM', p .. 'r:' .. rid, sid)
end
local n = redis.call('HINCRBY', h, 'n', -1)
if n <= 0 then
  n = 0
  redis.call('HSET', h, 'n', 0)
  disconnected(p, h, sid, now, forget)
end
return n
