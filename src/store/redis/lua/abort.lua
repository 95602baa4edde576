-- Abort acquire attempts whose outcome is unknown (their caller stopped waiting, or the
-- connection they were sent on was replaced): remember them, so that any of them that
-- reaches the server later is refused by acquire.lua; retire their claims; and delete the
-- key if it holds the value and no claim is left (what they may have created, and
-- nothing any other acquire of the same value still holds).
-- KEYS[1]: lock key; KEYS[2]: its aborted attempts (a hash); KEYS[3]: its claims (see
-- acquire.lua). Same cluster slot.
-- ARGV[1]: lock value; ARGV[2]: how long to remember, in milliseconds; ARGV[3]: how to
-- announce a release ('p', 's' or '', as release.lua, best effort); ARGV[4]: the release
-- channel; ARGV[5..]: the attempt ids.
-- Returns 1 when the key was deleted, 0 otherwise.
for i = 5, #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], '1')
  redis.call('HDEL', KEYS[3], ARGV[i])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1]
    and redis.call('HLEN', KEYS[3]) - redis.call('HEXISTS', KEYS[3], '#') == 0 then
  redis.call('DEL', KEYS[1], KEYS[3])
  if ARGV[3] == 'p' then
    redis.pcall('PUBLISH', ARGV[4], '')
  elseif ARGV[3] == 's' then
    redis.pcall('SPUBLISH', ARGV[4], '')
  end
  return 1
end
return 0
