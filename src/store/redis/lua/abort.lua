-- Abort acquire attempts of one client whose outcome is unknown (their caller stopped
-- waiting, or the connection they were sent on was replaced): raise the client's record
-- of aborted attempts on the key, so that any of them reaching the server later is
-- refused by acquire.lua; and delete the key if it holds the value, one of them created
-- it and one of them armed it last (never a lock that was held before they began, nor
-- one another attempt of the value armed since: that attempt's caller holds it).
-- KEYS[1]: lock key; KEYS[2]: its state (see acquire.lua); KEYS[3]: the client's record
-- of aborted attempts. Same cluster slot.
-- ARGV[1]: lock value; ARGV[2]: how long to keep the record, ms; ARGV[3]: how to announce
-- a release ('p', 's' or '', as release.lua, best effort); ARGV[4]: the release channel;
-- ARGV[5]: the highest attempt number aborted; ARGV[6..]: the attempt ids.
-- Returns 1 when the key was deleted, 0 otherwise.
-- ARGV[5] = '0': the attempts were all answered (nothing can land late): no record.
if ARGV[5] ~= '0' then
  local record = redis.call('GET', KEYS[3])
  if record and tonumber(record) >= tonumber(ARGV[5]) then
    redis.call('PEXPIRE', KEYS[3], ARGV[2])
  else
    redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[2])
  end
end
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local state = redis.call('GET', KEYS[2])
if not state then
  return 0
end
local creator, last = string.match(state, '^%d+ (%S+) (%S+)')
local created, armed = false, false
for i = 6, #ARGV do
  created = created or ARGV[i] == creator
  armed = armed or ARGV[i] == last
end
if created and armed then
  redis.call('DEL', KEYS[1])
  if ARGV[3] == 'p' then
    redis.pcall('PUBLISH', ARGV[4], '')
  elseif ARGV[3] == 's' then
    redis.pcall('SPUBLISH', ARGV[4], '')
  end
  return 1
end
return 0
