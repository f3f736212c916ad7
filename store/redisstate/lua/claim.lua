-- claim: lease the heads of the shard's session queues that are due, for
-- one deliverer. Only a queue's head is ever leased, and one lease per
-- session at a time, so a session's notifications go out in order even when
-- a survivor takes over a dead replica's work (a lapsed lease is free again);
-- each lease carries a fencing token, so a late answer of an old owner is
-- refused (ack).
-- The shard's held hash (sid → owner of the last lease not yet acked) tells
-- a takeover apart: a head last leased by another owner and never acked is
-- that owner's work, left by a dead or stalled deliverer. It holds only
-- sessions whose head is leased or lapsed unanswered: ack clears the entry.
-- KEYS[1] the shard's ready set. ARGV: prefix, owner, lease ms, limit.
-- Returns a flat list: sid, token, head notification (JSON), its episode is
-- dead (1/0: a return message whose /expire was dead-lettered), taken over
-- (1/0) per lease.
local p, owner, leasems, limit = ARGV[1], ARGV[2], num(ARGV[3]), num(ARGV[4])
local now = now_ms()
local held = p .. 'held'
-- Leased heads stay in the ready set until acked, with the score they had
-- (the oldest due, so they come first), and the limit counts only what this
-- call leases: the window looks past every one of them. Each is in the held
-- hash, so limit plus its size is enough to find limit free heads if the
-- shard has them; a fixed window (it was four times the limit) was filled by
-- the caller's own leases when it asked for one or two heads, the shard
-- looked empty though it was not, and a burst drained one shard per round.
-- The cost stays bounded: held counts at most the attempts running against
-- the shard, each bounded by a deliverer's Concurrency, and lapsed ones.
local window = limit + redis.call('HLEN', held)
local ready = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, window)
local out = {}
local leased = 0
for _, sid in ipairs(ready) do
  if leased >= limit then break end
  local lease = p .. 'lease:' .. sid
  if redis.call('EXISTS', lease) == 0 then
    local head = redis.call('LINDEX', p .. 'q:' .. sid, 0)
    if not head then
      redis.call('ZREM', KEYS[1], sid)
      redis.call('HDEL', held, sid)
    else
      local token = redis.call('INCR', p .. 'fence')
      redis.call('SET', lease, owner .. '/' .. token, 'PX', leasems)
      local prev = redis.call('HGET', held, sid)
      redis.call('HSET', held, sid, owner)
      local n = cjson.decode(head)
      local dead = 0
      if n.kind == 'client.online' and redis.call('HEXISTS', p .. 'deadep', sid .. '\n' .. n.ep) == 1 then
        dead = 1
      end
      local taken = 0
      if prev and prev ~= owner then taken = 1 end
      table.insert(out, sid)
      table.insert(out, token)
      table.insert(out, head)
      table.insert(out, dead)
      table.insert(out, taken)
      leased = leased + 1
    end
  end
end
return out
