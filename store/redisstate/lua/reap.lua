-- reap: a replica's lease lapsed; remove its connections from the shard's
-- sessions (idempotent: several survivors may run it). A session left
-- without connections starts its interval at the lapse.
-- KEYS[1] the dead replica's set of sessions in this shard.
-- ARGV: prefix, replica, lapse ms, forget after ms, batch. At most batch
-- sessions per call, so that no call holds Redis for long (a script blocks
-- every other client while it runs); the caller repeats until it returns
-- fewer. Returns sessions reaped.
local p, rid, lapse, forget = ARGV[1], ARGV[2], num(ARGV[3]), num(ARGV[4])
local sids = redis.call('SPOP', KEYS[1], num(ARGV[5]))
for _, sid in ipairs(sids) do
  local h = p .. 's:' .. sid
  local c = num(redis.call('HGET', h, 'c:' .. rid))
  if c > 0 then
    redis.call('HDEL', h, 'c:' .. rid)
    local n = redis.call('HINCRBY', h, 'n', -c)
    if n <= 0 then
      redis.call('HSET', h, 'n', 0)
      disconnected(p, h, sid, lapse, forget)
    end
  end
end
return #sids
