-- Owner-checked release of a lock's claims.
-- KEYS[1]: lock key; KEYS[2]: its claims (see acquire.lua).
-- ARGV[1]: lock value; ARGV[2]: how to announce a release ('p': PUBLISH, 's': SPUBLISH,
-- '': not at all); ARGV[3]: the release channel (in the lock key's slot); ARGV[4..]: the
-- ids of the attempts that armed this lock.
-- The lock's claims are retired; the key is deleted once no claim is left (another
-- acquire of the same value may still hold it). Announcing is best effort (`pcall`): a
-- user the ACLs keep off the channel still releases, and waiters fall back to their
-- retry strategy.
-- Returns 1 when the lock held the key (its claims were there), 0 otherwise (left
-- untouched).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
local mine = 0
for i = 4, #ARGV do
  mine = mine + redis.call('HDEL', KEYS[2], ARGV[i])
end
if mine == 0 then
  return 0
end
if redis.call('HLEN', KEYS[2]) - redis.call('HEXISTS', KEYS[2], '#') == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  if ARGV[2] == 'p' then
    redis.pcall('PUBLISH', ARGV[3], '')
  elseif ARGV[2] == 's' then
    redis.pcall('SPUBLISH', ARGV[3], '')
  end
end
return 1
