-- Fenced, idempotent acquire.
-- KEYS[1]: lock key; KEYS[2]: fence counter key (same cluster slot as KEYS[1]).
-- ARGV[1]: lock value; ARGV[2]: expiration in milliseconds.
-- Returns the fencing token (>= 1) when the key is now held by ARGV[1], 0 when another value holds it.
local current = redis.call('GET', KEYS[1])
if current == false then
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return token
end
if current == ARGV[1] then
  -- Same value: an earlier attempt (maybe one that timed out) landed. Re-arm, keep the token.
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local token = redis.call('GET', KEYS[2])
  if token == false then
    -- The counter vanished (deleted by hand or lost in a restart): issue a fresh token.
    return redis.call('INCR', KEYS[2])
  end
  return tonumber(token)
end
return 0
