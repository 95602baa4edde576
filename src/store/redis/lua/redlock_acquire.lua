-- Idempotent acquire on one Redlock node: acquire.lua without the fence counter (Redlock
-- has no fencing token, so no node keeps a counter nobody reads).
-- KEYS[1]: lock key; KEYS[2]: its aborted attempts (a hash, same cluster slot).
-- ARGV[1]: lock value; ARGV[2]: expiration in milliseconds; ARGV[3]: this attempt's id.
-- Returns 1 when the key is now held by ARGV[1] (taken, or re-armed: an earlier attempt
-- with this value landed), 0 when another value holds it, -1 when this attempt was
-- aborted by its client (it reached the server after its caller gave up on it) and did
-- nothing.
if redis.call('HEXISTS', KEYS[2], ARGV[3]) == 1 then
  return -1
end
local current = redis.call('GET', KEYS[1])
if current == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
