-- Abort acquire attempts whose outcome is unknown (their caller stopped waiting, or the
-- connection they were sent on was replaced): remember them, so that any of them that
-- reaches the server later is refused by acquire.lua, and, when asked, release the key if
-- it holds the value (what one of them may have created).
-- KEYS[1]: lock key; KEYS[2]: its aborted attempts (a hash, same cluster slot).
-- ARGV[1]: lock value; ARGV[2]: '1' to release; ARGV[3]: how long to remember, in
-- milliseconds; ARGV[4]: how to announce a release ('p', 's' or '', as release.lua);
-- ARGV[5]: the release channel (announcing is best effort, as in release.lua);
-- ARGV[6..]: the attempt ids.
-- Returns 1 when the key was released, 0 otherwise.
for i = 6, #ARGV do
  redis.call('HSET', KEYS[2], ARGV[i], '1')
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[2] == '1' and redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[4] == 'p' then
    redis.pcall('PUBLISH', ARGV[5], '')
  elseif ARGV[4] == 's' then
    redis.pcall('SPUBLISH', ARGV[5], '')
  end
  return 1
end
return 0
