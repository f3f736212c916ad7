-- open: a replica's connection of a session opened.
-- KEYS[1] session hash. ARGV: prefix, sid, replica, bot, mode, interval ms,
-- handed over by default (1/0), return text, traceparent.
-- Returns {returned (1/0), episode, notification queued (1/0)}.
local p, sid, rid, bot, mode, iv = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], num(ARGV[6])
local h = KEYS[1]
local now = now_ms()
if redis.call('EXISTS', h) == 0 then
  redis.call('HSET', h, 'st', 'p', 'ep', 0, 'ho', ARGV[7], 'xs', 0, 'seen', now, 'dl', 0, 'n', 0)
end
redis.call('PERSIST', h)
if bot ~= '' and (redis.call('HGET', h, 'bot') or '') == '' then
  redis.call('HSET', h, 'bot', bot)
end
redis.call('HSET', h, 'mode', mode, 'iv', iv)
if ARGV[9] ~= '' then redis.call('HSET', h, 'tp', ARGV[9]) end
redis.call('HINCRBY', h, 'c:' .. rid, 1)
redis.call('HINCRBY', h, 'n', 1)
redis.call('SADD', p .. 'r:' .. rid, sid)
if mode ~= 'connection' then
  return {0, num(redis.call('HGET', h, 'ep')), 0} -- activity mode: an open is not activity
end
redis.call('HSET', h, 'seen', now)
return back(p, h, sid, now, ARGV[8])
