-- Owner-checked re-arm of one incarnation of a lock.
-- KEYS[1]: lock key; KEYS[2]: its claims (see acquire.lua).
-- ARGV[1]: lock value; ARGV[2]: expiration in milliseconds; ARGV[3]: the lock's token.
-- Returns 1 when the key still holds ARGV[1] in the incarnation of token ARGV[3] (it is
-- re-armed, never shortened), 0 otherwise (left untouched: the key is gone, held by
-- another value, or re-created since).
if redis.call('GET', KEYS[1]) ~= ARGV[1] or redis.call('HGET', KEYS[2], '#') ~= ARGV[3] then
  return 0
end
local left = redis.call('PTTL', KEYS[1])
if left >= 0 and left < tonumber(ARGV[2]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ARGV[2])
end
return 1
