-- timeline.lua: add or replace events of one session's history.
-- KEYS[1] the session's list P{N}:tl:SID, newest first; each item "ID\tJSON".
-- ARGV[1] how many items the list keeps; ARGV[2] its expiry (ms);
-- then pairs ID, JSON. An item whose ID is in the list is replaced where
-- it stands (an activity summary that grew); others are pushed in front.
local key, cap, ttl = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local id, item = ARGV[i], ARGV[i] .. "\t" .. ARGV[i + 1]
  local items = redis.call("LRANGE", key, 0, cap - 1)
  local at = nil
  for j, v in ipairs(items) do
    if string.sub(v, 1, #id + 1) == id .. "\t" then
      at = j - 1
      break
    end
  end
  if at then
    redis.call("LSET", key, at, item)
  else
    redis.call("LPUSH", key, item)
  end
end
redis.call("LTRIM", key, 0, cap - 1)
redis.call("PEXPIRE", key, ttl)
return 1
