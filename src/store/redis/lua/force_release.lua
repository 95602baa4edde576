-- Delete a lock whoever holds it (an operator's decision).
-- KEYS[1]: lock key; KEYS[2]: its state (see acquire.lua). ARGV[1]: how to announce ('p',
-- 's' or '', as release.lua, best effort); ARGV[2]: the release channel; ARGV[3]: '' or
-- the fencing token (decimal text) the key's current incarnation must have.
-- Returns 1 when a lock was deleted, 0 when there was none (or another incarnation).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[3] ~= '' then
  local state = redis.call('GET', KEYS[2])
  if not state or string.match(state, '^%d+') ~= ARGV[3] then
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
