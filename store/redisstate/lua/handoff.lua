-- handoff: a hand-over to a human started (1) or ended (0). A start while
-- the client is already absent queues that episode's /expire at once (the
-- agent must learn the client is gone); an end after it closes the episode
-- without a return message, so a new hand-over in the same absence is a new
-- episode and one episode never has two /expire (invariant 2).
-- KEYS[1] session hash. ARGV: prefix, sid, on, bot, forget after ms,
-- traceparent (kept while handed over).
-- Returns 1 when it changed, 0 when it already was so (or the session is
-- unknown and the hand-over ends).
local p, sid, on, bot, forget = ARGV[1], ARGV[2], ARGV[3], ARGV[4], num(ARGV[5])
local h = KEYS[1]
local now = now_ms()
if redis.call('EXISTS', h) == 0 then
  if on ~= '1' then return 0 end
  create(h, now, 0)
  redis.call('PEXPIRE', h, forget)
end
if bot ~= '' and (redis.call('HGET', h, 'bot') or '') == '' then
  redis.call('HSET', h, 'bot', bot)
end
if redis.call('HGET', h, 'ho') == on then return 0 end
redis.call('HSET', h, 'ho', on)
if on == '1' then keep_trace(h, ARGV[6]) else redis.call('HDEL', h, 'tp') end
local st = redis.call('HMGET', h, 'st', 'xs', 'ep', 'rs', 'seen', 'bot', 'tp', 'inc', 'ab')
if st[1] == 'a' then
  if on == '1' and st[2] ~= '1' and not muted(h) then
    local ep = num(st[3])
    queue(p, sid, {id = note_id(sid, st[8] or '', ep, 'client.offline'), kind = 'client.offline', sid = sid,
      bot = st[6] or '', ep = ep, reason = st[4] or '', seen = num(st[5]), at = now, tp = st[7] or ''})
    redis.call('HSET', h, 'xs', 1)
  elseif on ~= '1' and st[2] == '1' then
    redis.call('HSET', h, 'ep', num(st[3]) + 1, 'xs', 0)
  end
end
return 1
