-- Shared by every script (prepended when the script is built). A session's
-- keys share the hash tag of its shard, so each script touches one Cluster
-- slot; KEYS[1] is always the shard's prefix key "P{N}:" itself is not a key,
-- so the prefix comes in ARGV[1] and every key is built from it.
-- Times are Unix milliseconds from Redis's own clock: no replica's clock
-- decides a deadline (docs/ARCHITECTURE.md, "Cluster mode").
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function num(v)
  return tonumber(v) or 0
end

-- webhook-id: derived from session, episode and kind, so that a duplicate
-- after a failover carries the same id (docs/ARCHITECTURE.md, "Cluster
-- mode"). inc, the session's creation time, keeps a session that was
-- forgotten and came back later from reusing an old episode's id.
local function note_id(sid, inc, ep, kind)
  return 'msg_' .. string.sub(redis.sha1hex(sid .. '\n' .. inc .. '\n' .. ep .. '\n' .. kind), 1, 32)
end

-- create makes session h, present, at now.
local function create(h, now, handed)
  redis.call('HSET', h, 'st', 'p', 'ep', 0, 'ho', handed, 'xs', 0, 'seen', now, 'dl', 0, 'n', 0, 'inc', now)
end

-- muted: presence is off for the session's bot (its settings' enabled is
-- false): absences are still decided, but nothing is notified (invariant 4,
-- docs/ARCHITECTURE.md "Presence invariants"). The replicas state it with
-- every event (field en, kept only while it is 0).
local function muted(h)
  return redis.call('HGET', h, 'en') == '0'
end

local function set_muted(h, flag)
  if flag == '1' then redis.call('HSET', h, 'en', 0) else redis.call('HDEL', h, 'en') end
end

-- settings records the session's bot (once) and the mode and interval the
-- reporting replica resolved for it. An event that names no bot (a request
-- without botId, a replica restating a count it lost track of) resolved the
-- defaults, which must not replace the settings of the session's known bot:
-- it keeps the recorded ones. Returns the mode and interval in force.
local function settings(h, bot, mode, iv, mute)
  local known = redis.call('HGET', h, 'bot') or ''
  if bot ~= '' and known == '' then
    redis.call('HSET', h, 'bot', bot)
    known = bot
  end
  if bot == '' and known ~= '' then
    local cur = redis.call('HMGET', h, 'mode', 'iv')
    if cur[1] then return cur[1], num(cur[2]) end
  end
  redis.call('HSET', h, 'mode', mode, 'iv', iv)
  set_muted(h, mute)
  return mode, iv
end

-- keep_trace records tp, the traceparent of the session's latest
-- connection or request, for the spans of its notifications to link to. Only
-- a session handed over has notifications, and a traceparent is a quarter of
-- a session's bytes, so the others keep none (README, "Cluster mode":
-- memory per session).
local function keep_trace(h, tp)
  if tp ~= '' and redis.call('HGET', h, 'ho') == '1' then redis.call('HSET', h, 'tp', tp) end
end

-- enqueue appends head (JSON) to the session's outbox queue and makes the
-- session ready for delivery at due unless it already waits (its score is
-- kept: a head being retried holds the rest back). The shard's depth counts
-- every queued notification, so that the outbox depth is one read per shard
-- instead of a walk of every queue; ack takes it down (unqueued).
local function enqueue(p, sid, head, due)
  redis.call('RPUSH', p .. 'q:' .. sid, head)
  redis.call('ZADD', p .. 'ready', 'NX', due, sid)
  redis.call('INCR', p .. 'depth')
end

-- queue enqueues a notification just decided, due at once.
local function queue(p, sid, note)
  enqueue(p, sid, cjson.encode(note), note.at)
end

-- unqueued takes a notification that left a queue off the shard's depth. It
-- never goes below 0: queues written before the counter existed were never
-- counted, and clamping keeps it at most the true depth, exact again once
-- those queues drain.
local function unqueued(p)
  if redis.call('DECR', p .. 'depth') < 0 then redis.call('SET', p .. 'depth', 0) end
end

-- back: a sign of presence of session h at now. An absent session returns:
-- its return message is queued when the episode's /expire was (invariant 3,
-- docs/ARCHITECTURE.md "Presence invariants"). A present one loses its
-- deadline in connection mode while it has connections (close re-arms it).
-- Returns {returned, episode, queued}.
local function back(p, h, sid, now, text)
  local st = redis.call('HMGET', h, 'st', 'ep', 'ho', 'xs', 'ab', 'bot', 'tp', 'n', 'mode', 'inc')
  local ep = num(st[2])
  if st[1] ~= 'a' then
    if st[9] == 'connection' and num(st[8]) > 0 then
      redis.call('HSET', h, 'dl', 0)
      redis.call('ZREM', p .. 'due', sid)
    end
    return {0, ep, 0}
  end
  redis.call('HSET', h, 'st', 'p', 'xs', 0, 'rs', '', 'dl', 0, 'ab', 0, 'rt', now)
  redis.call('ZREM', p .. 'due', sid)
  if st[3] == '1' and st[4] == '1' then
    queue(p, sid, {id = note_id(sid, st[10] or '', ep, 'client.online'), kind = 'client.online', sid = sid,
      bot = st[6] or '', ep = ep, text = text, since = num(st[5]), at = now, tp = st[7] or ''})
    return {1, ep, 1}
  end
  return {1, ep, 0}
end

-- disconnected: session h has no live connection left since at: in
-- connection mode its interval starts then (invariant 1: a reconnect within
-- it produces nothing). The session is forgotten forget ms after, unless it
-- comes back.
local function disconnected(p, h, sid, at, forget)
  local st = redis.call('HMGET', h, 'st', 'mode', 'iv')
  if st[1] == 'p' and st[2] == 'connection' then
    local dl = at + num(st[3])
    redis.call('HSET', h, 'seen', at, 'dl', dl)
    redis.call('ZADD', p .. 'due', dl, sid)
  end
  redis.call('PEXPIRE', h, forget)
end
