-- Delete a lock whoever holds it (an operator's decision).
-- KEYS[1]: lock key; KEYS[2]: its claims. ARGV[1]: how to announce ('p', 's' or '', as
-- release.lua, best effort); ARGV[2]: the release channel; ARGV[3]: '' or the fencing
-- token (decimal text) the key's current incarnation must have.
-- Returns 1 when a lock was deleted, 0 when there was none (or another incarnation).
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
if ARGV[3] ~= '' and redis.call('HGET', KEYS[2], '#') ~= ARGV[3] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
if ARGV[1] == 'p' then
  redis.pcall('PUBLISH', ARGV[2], '')
elseif ARGV[1] == 's' then
  redis.pcall('SPUBLISH', ARGV[2], '')
end
return 1
