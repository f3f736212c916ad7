-- ack: what became of a leased head. Refused (returns 0) unless the lease
-- is still the caller's, by its fencing token: a deliverer whose lease
-- lapsed (paused, partitioned) cannot remove what a survivor now owns.
-- Any applied outcome clears the session from the shard's held hash: the
-- head was answered for, so whoever leases the session next takes nothing
-- over (claim).
-- KEYS[1] the session's lease. ARGV: prefix, sid, owner/token, outcome
-- (delivered, retry, dead), the head as it is now (JSON), next attempt ms
-- (retry), dead letters kept, recent kept.
-- Returns 1 when applied.
local p, sid, lease, outcome, head = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('GET', KEYS[1]) ~= lease then return 0 end
local q = p .. 'q:' .. sid
local ready = p .. 'ready'
redis.call('HDEL', p .. 'held', sid)
if outcome == 'retry' then
  redis.call('LSET', q, 0, head)
  redis.call('ZADD', ready, num(ARGV[6]), sid)
  redis.call('DEL', KEYS[1])
  return 1
end
if redis.call('LPOP', q) then unqueued(p) end
if outcome == 'dead' then
  redis.call('RPUSH', p .. 'dead', head)
  redis.call('LTRIM', p .. 'dead', -num(ARGV[7]), -1)
  local n = cjson.decode(head)
  if n.kind == 'client.offline' then
    redis.call('HSET', p .. 'deadep', sid .. '\n' .. n.ep, n.id)
  end
end
redis.call('RPUSH', p .. 'recent', head)
redis.call('LTRIM', p .. 'recent', -num(ARGV[8]), -1)
if redis.call('LLEN', q) > 0 then
  redis.call('ZADD', ready, now_ms(), sid)
else
  redis.call('ZREM', ready, sid)
end
redis.call('DEL', KEYS[1])
return 1
