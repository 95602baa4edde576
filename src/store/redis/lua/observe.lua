-- What a forced release observes before it deletes, so that it deletes only that
-- (force_release.lua): never a lock taken since, even if the delete is sent twice.
-- KEYS[1]: lock key; KEYS[2]: its state (see acquire.lua).
-- Returns false when there is no key; otherwise {the SHA-1 of the value holding it ('-'
-- for a key that is not a string), the fencing token of its incarnation ('' without a
-- state: a key set by hand)}.
if redis.call('EXISTS', KEYS[1]) == 0 then
  return false
end
local value = redis.pcall('GET', KEYS[1])
if type(value) ~= 'string' then
  return {'-', ''}
end
local token = ''
local state = redis.pcall('GET', KEYS[2])
if type(state) == 'string' then
  token = string.match(state, '^%d+') or ''
end
return {redis.sha1hex(value), token}
