-- Owner-checked remaining time to live. KEYS[1]: lock key; ARGV[1]: lock value.
-- Returns the PTTL in milliseconds (-1: no expiry), or -3 when not held by ARGV[1].
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PTTL', KEYS[1])
end
return -3
