-- Owner-checked release: delete the key if it holds the value (the holder's identity).
-- KEYS[1]: lock key.
-- ARGV[1]: lock value; ARGV[2]: how to announce a release ('p': PUBLISH, 's': SPUBLISH,
-- '': not at all); ARGV[3]: the release channel (in the lock key's slot).
-- The key's state stays (its token is the next acquisition's floor) and expires by itself.
-- Announcing is best effort (`pcall`): a user the ACLs keep off the channel still
-- releases, and waiters fall back to their retry strategy.
-- Returns 1 when the value held the key (deleted), 0 otherwise (left untouched).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if ARGV[2] == 'p' then
  redis.pcall('PUBLISH', ARGV[3], '')
elseif ARGV[2] == 's' then
  redis.pcall('SPUBLISH', ARGV[3], '')
end
return 1
