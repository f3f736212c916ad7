-- conns: a replica states how many live connections it holds of a session.
-- The count is absolute, not a delta, so the call is idempotent: a retry
-- after a timeout, or the replay of a replica's connections after Redis was
-- away or came back empty, can never count a connection twice.
-- KEYS[1] session hash. ARGV: prefix, sid, replica, count, bot, mode,
-- interval ms, handed over by default (1/0), return text, traceparent,
-- forget after ms, muted (1/0), opened (1/0: a connection opened since the
-- last count, even if the count did not grow: it opened and closed before
-- the replica stated it, which is still presence).
-- The traceparent is kept only for a session handed over (keep_trace).
-- Returns {returned (1/0), episode, notification queued (1/0), connections
-- on all replicas}.
local p, sid, rid, count, bot, mode, iv = ARGV[1], ARGV[2], ARGV[3], num(ARGV[4]), ARGV[5], ARGV[6], num(ARGV[7])
local opened = ARGV[13] == '1'
local h = KEYS[1]
local now = now_ms()
local created, orphan = false, false
if redis.call('EXISTS', h) == 0 then
  -- A close of a session Redis does not have (it came back empty, or lost
  -- the open in a failover) matters only for a session known to be handed
  -- over: its leaving must still be reported, one interval from now.
  if count == 0 and ARGV[8] ~= '1' and not opened then return {0, 0, 0, 0} end
  create(h, now, ARGV[8])
  created, orphan = true, count == 0
end
mode, iv = settings(h, bot, mode, iv, ARGV[12])
local prev = num(redis.call('HGET', h, 'c:' .. rid))
if count > 0 then
  redis.call('HSET', h, 'c:' .. rid, count)
  redis.call('SADD', p .. 'r:' .. rid, sid)
else
  redis.call('HDEL', h, 'c:' .. rid)
  redis.call('SREM', p .. 'r:' .. rid, sid)
end
local n = redis.call('HINCRBY', h, 'n', count - prev)
if n < 0 then
  n = 0
  redis.call('HSET', h, 'n', 0)
end
local r = {0, num(redis.call('HGET', h, 'ep')), 0}
if count > prev or opened then
  -- A connection opened: in connection mode that is presence (and maybe a
  -- return); in activity mode an open is not activity.
  redis.call('PERSIST', h)
  keep_trace(h, ARGV[10])
  if mode == 'connection' then
    redis.call('HSET', h, 'seen', now)
    r = back(p, h, sid, now, ARGV[9])
  elseif created then
    -- A new session in activity mode has its interval from now: a client
    -- that connects and never speaks is found inactive (as embedded).
    redis.call('HSET', h, 'dl', now + iv)
    redis.call('ZADD', p .. 'due', now + iv, sid)
  end
end
if n == 0 and (prev > 0 or orphan or opened) then
  -- The last connection is gone (possibly the one that just opened).
  disconnected(p, h, sid, now, num(ARGV[11]))
end
table.insert(r, n)
return r
