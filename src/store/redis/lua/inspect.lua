-- What an operator may see of a lock: never its value.
-- KEYS[1]: lock key; KEYS[2]: its state (see acquire.lua).
-- Returns {SHA-1 of the holder's value, remaining time to live in ms (-1: no expiry), the
-- fencing token of the current incarnation, locked at (ms since the epoch, or ''), the
-- holder label (or '')} when a lock of this library holds the key, false otherwise (no
-- such key, or a key that is not such a lock).
local value = redis.pcall('GET', KEYS[1])
if type(value) ~= 'string' then
  return false
end
local state = redis.pcall('GET', KEYS[2])
if type(state) ~= 'string' then
  return false
end
local token, at, label = string.match(state, '^(%d+) %S+ ?(%d*) ?(.*)$')
if not token then
  return false
end
return {redis.sha1hex(value), redis.call('PTTL', KEYS[1]), token, at, label}
