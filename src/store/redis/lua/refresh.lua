-- Owner-checked re-arm. KEYS[1]: lock key; ARGV[1]: lock value; ARGV[2]: expiration in ms.
-- Returns 1 when re-armed, 0 when the key is gone or held by another value (left untouched).
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
