-- replay: move a dead letter back into its session's queue, as the embedded
-- store's Replay does: the same webhook-id, attempts and last error reset,
-- the retry horizon restarted (replayed), queued behind whatever the session
-- still has to deliver, so its order holds. A replayed /expire's episode is
-- dead no more (the embedded deliverer forgets it, docs/ARCHITECTURE.md
-- "Delivery"): a return message of it queued or replayed after it is sent.
-- A webhook-id is derived from its session, so only the session's shard can
-- hold it; the newest dead letter with the id is the one replayed, as the
-- embedded stores do.
-- KEYS[1] the shard's dead letters. ARGV: prefix, webhook id.
-- Returns the replayed notification (JSON), or false if the shard has no
-- dead letter with that id.
local p, id = ARGV[1], ARGV[2]
local dead = redis.call('LRANGE', KEYS[1], 0, -1)
-- A plain find before decoding, since the list holds up to the dead letters
-- kept: a quote inside a JSON string is escaped, so '"id":"ID"' matches the
-- field itself (the decode confirms it). Derived ids (msg_ and hex) need no
-- escaping; any other id is looked for by decoding every entry.
local plain = string.find(id, '^[%w_%-]+$') ~= nil
local needle = '"id":"' .. id .. '"'
for i = #dead, 1, -1 do
  local e = dead[i]
  if not plain or string.find(e, needle, 1, true) then
    local n = cjson.decode(e)
    if n.id == id then
      redis.call('LREM', KEYS[1], -1, e)
      local now = now_ms()
      n.attempts, n.err, n.status = nil, nil, nil
      n.replayed = now
      local head = cjson.encode(n)
      enqueue(p, n.sid, head, now)
      if n.kind == 'client.offline' then
        redis.call('HDEL', p .. 'deadep', n.sid .. '\n' .. n.ep)
      end
      return head
    end
  end
end
return false
