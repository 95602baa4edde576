-- Owner-checked remaining time to live: the value is the holder's identity.
-- KEYS[1]: lock key. ARGV[1]: lock value.
-- Returns the PTTL in ms (-1: no expiry), or -3 when the key does not hold ARGV[1].
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PTTL', KEYS[1])
end
return -3
