-- fire: decide the shard's sessions whose deadline is due by Redis's clock.
-- Any replica may run it, at any time: a session is decided absent only if
-- it is still present with that very deadline (compare-and-swap), and its
-- /expire is queued in the same step (transactional outbox), so replicas
-- sweeping at once cannot decide one episode twice (invariant 2).
-- KEYS[1] the shard's deadline set. ARGV: prefix, limit, forget after ms.
-- Returns a flat list: sid, episode, reason, queued (1/0), the deadline that
-- fired (ms), when it was decided (Redis's now, ms) per decision: the two
-- times give the caller the decision's lag behind its deadline.
local p, limit, forget = ARGV[1], num(ARGV[2]), num(ARGV[3])
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, limit)
local out = {}
for i = 1, #due, 2 do
  local sid, at = due[i], num(due[i + 1])
  local h = p .. 's:' .. sid
  local st = redis.call('HMGET', h, 'st', 'dl', 'ep', 'ho', 'n', 'mode', 'seen', 'bot', 'tp', 'inc')
  redis.call('ZREM', KEYS[1], sid)
  if st[1] == 'p' and num(st[2]) == at then
    local ep = num(st[3]) + 1
    local reason = 'inactive'
    if st[6] == 'connection' then reason = 'disconnected' end
    local handed = st[4] == '1' and not muted(h)
    redis.call('HSET', h, 'st', 'a', 'ep', ep, 'ab', now, 'dl', 0, 'rs', reason, 'xs', handed and 1 or 0)
    local queued = 0
    if handed then
      queue(p, sid, {id = note_id(sid, st[10] or '', ep, 'client.offline'), kind = 'client.offline', sid = sid,
        bot = st[8] or '', ep = ep, reason = reason, seen = num(st[7]), at = now, tp = st[9] or ''})
      queued = 1
    end
    if num(st[5]) == 0 then redis.call('PEXPIRE', h, forget) end
    table.insert(out, sid)
    table.insert(out, ep)
    table.insert(out, reason)
    table.insert(out, queued)
    table.insert(out, at)
    table.insert(out, now)
  elseif st[1] == 'p' and num(st[2]) > at then
    redis.call('ZADD', KEYS[1], num(st[2]), sid) -- moved meanwhile: keep the newer one
  end
end
return out
