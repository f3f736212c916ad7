-- claim: lease the heads of the shard's session queues that are due, for
-- one deliverer. Only a queue's head is ever leased, and one lease per
-- session at a time, so a session's notifications go out in order even when
-- a survivor takes over a dead replica's work (a lapsed lease is free again);
-- each lease carries a fencing token, so a late answer of an old owner is
-- refused (ack).
-- KEYS[1] the shard's ready set. ARGV: prefix, owner, lease ms, limit.
-- Returns a flat list: sid, token, head notification (JSON), its episode is
-- dead (1/0: a return message whose /expire was dead-lettered) per lease.
local p, owner, leasems, limit = ARGV[1], ARGV[2], num(ARGV[3]), num(ARGV[4])
local now = now_ms()
-- Heads leased by other deliverers stay in the ready set until acked, so
-- the window looks past them (four times the limit, a bounded cost) and the
-- limit counts only what this call leases.
local ready = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, limit * 4)
local out = {}
for _, sid in ipairs(ready) do
  if #out >= limit * 4 then break end
  local lease = p .. 'lease:' .. sid
  if redis.call('EXISTS', lease) == 0 then
    local head = redis.call('LINDEX', p .. 'q:' .. sid, 0)
    if not head then
      redis.call('ZREM', KEYS[1], sid)
    else
      local token = redis.call('INCR', p .. 'fence')
      redis.call('SET', lease, owner .. '/' .. token, 'PX', leasems)
      local n = cjson.decode(head)
      local dead = 0
      if n.kind == 'client.online' and redis.call('HEXISTS', p .. 'deadep', sid .. '\n' .. n.ep) == 1 then
        dead = 1
      end
      table.insert(out, sid)
      table.insert(out, token)
      table.insert(out, head)
      table.insert(out, dead)
    end
  end
end
return out
