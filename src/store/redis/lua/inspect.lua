-- What an operator may see of a lock: never its value.
-- KEYS[1]: lock key; KEYS[2]: its claims.
-- Returns {SHA-1 of the holder's value, remaining time to live in ms (-1: no expiry),
-- the fencing token of the current incarnation} when a lock of this library holds the
-- key, false otherwise (no such key, or a key that is not such a lock).
local value = redis.pcall('GET', KEYS[1])
if type(value) ~= 'string' then
  return false
end
local token = redis.pcall('HGET', KEYS[2], '#')
if type(token) ~= 'string' then
  return false
end
return {redis.sha1hex(value), redis.call('PTTL', KEYS[1]), token}
