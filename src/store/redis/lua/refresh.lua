-- Owner-checked re-arm: the value is the holder's identity.
-- KEYS[1]: lock key; KEYS[2]: its state (see acquire.lua).
-- ARGV[1]: lock value; ARGV[2]: expiration, ms (set as given: shorter or longer); ARGV[3]:
-- how much longer than the lock its state lives, ms.
-- Returns 1 when the key holds ARGV[1] (re-armed), 0 otherwise (left untouched: the key
-- is gone or held by another value).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2] + ARGV[3])
return 1
