-- activity: a sign of presence that is not a connection: an HTTP request of
-- the session (either mode), or a client data message in activity mode.
-- KEYS[1] session hash. ARGV: prefix, sid, bot, mode, interval ms, handed
-- over by default (1/0), return text, traceparent, forget after ms, muted
-- (1/0).
-- Returns {returned (1/0), episode, notification queued (1/0)}.
local p, sid, bot, mode, iv, forget = ARGV[1], ARGV[2], ARGV[3], ARGV[4], num(ARGV[5]), num(ARGV[9])
local h = KEYS[1]
local now = now_ms()
if redis.call('EXISTS', h) == 0 then
  create(h, now, ARGV[6])
end
mode, iv = settings(h, bot, mode, iv, ARGV[10])
redis.call('HSET', h, 'seen', now)
local n = num(redis.call('HGET', h, 'n'))
if n == 0 then keep_trace(h, ARGV[8]) end
local r = back(p, h, sid, now, ARGV[7])
if mode == 'activity' or n == 0 then
  local dl = now + iv
  redis.call('HSET', h, 'dl', dl)
  redis.call('ZADD', p .. 'due', dl, sid)
end
if n == 0 then redis.call('PEXPIRE', h, forget) end
return r
