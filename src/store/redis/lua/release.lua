-- Owner-checked release. KEYS[1]: lock key; ARGV[1]: lock value; ARGV[2]: how to announce
-- the release ('p': PUBLISH, 's': SPUBLISH, '': not at all); ARGV[3]: the release channel
-- (in the lock key's slot). Announcing is best effort (`pcall`): a user the ACLs keep off
-- the channel still releases, and waiters fall back to their retry strategy.
-- Returns 1 when deleted, 0 when the key is gone or held by another value (left untouched).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  if ARGV[2] == 'p' then
    redis.pcall('PUBLISH', ARGV[3], '')
  elseif ARGV[2] == 's' then
    redis.pcall('SPUBLISH', ARGV[3], '')
  end
  return 1
end
return 0
