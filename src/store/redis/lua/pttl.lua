-- Owner-checked remaining time to live of one incarnation of a lock.
-- KEYS[1]: lock key; KEYS[2]: its claims (see acquire.lua). ARGV[1]: lock value;
-- ARGV[2]: the lock's token.
-- Returns the PTTL in milliseconds (-1: no expiry), or -3 when not held by ARGV[1] in the
-- incarnation of token ARGV[2].
if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('HGET', KEYS[2], '#') == ARGV[2] then
  return redis.call('PTTL', KEYS[1])
end
return -3
