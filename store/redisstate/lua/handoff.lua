-- handoff: a hand-over to a human started (1) or ended (0).
-- KEYS[1] session hash. ARGV: prefix, sid, on, bot, forget after ms.
-- Returns 1 when it changed, 0 when it already was so (or the session is
-- unknown and the hand-over ends).
local sid, on, bot, forget = ARGV[2], ARGV[3], ARGV[4], num(ARGV[5])
local h = KEYS[1]
if redis.call('EXISTS', h) == 0 then
  if on ~= '1' then return 0 end
  local now = now_ms()
  create(h, now, 0)
  redis.call('PEXPIRE', h, forget)
end
if bot ~= '' and (redis.call('HGET', h, 'bot') or '') == '' then
  redis.call('HSET', h, 'bot', bot)
end
if redis.call('HGET', h, 'ho') == on then return 0 end
redis.call('HSET', h, 'ho', on)
return 1
