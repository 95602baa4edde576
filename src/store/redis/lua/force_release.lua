-- Delete a lock whoever holds it (an operator's decision), only the one named: never one
-- taken since, so that a delete sent twice cannot delete the next holder.
-- KEYS[1]: lock key; KEYS[2]: its state (see acquire.lua). ARGV[1]: how to announce ('p',
-- 's' or '', as release.lua, best effort); ARGV[2]: the release channel; ARGV[3]: '' or
-- the fencing token (decimal text) the key's current incarnation must have; ARGV[4]: ''
-- or what must hold the key, as observe.lua saw it (the SHA-1 of the value, or '-' for a
-- key that is not a string).
-- Returns 1 when a lock was deleted, 0 when there was none (or another).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[3] ~= '' then
  local state = redis.call('GET', KEYS[2])
  if not state or string.match(state, '^%d+') ~= ARGV[3] then
    return 0
  end
end
if ARGV[4] ~= '' then
  local value = redis.pcall('GET', KEYS[1])
  local held = '-'
  if type(value) == 'string' then
    held = redis.sha1hex(value)
  end
  if held ~= ARGV[4] then
    return 0
  end
end
redis.call('DEL', KEYS[1])
if ARGV[1] == 'p' then
  redis.pcall('PUBLISH', ARGV[2], '')
elseif ARGV[1] == 's' then
  redis.pcall('SPUBLISH', ARGV[2], '')
end
return 1
