-- Resource-side fencing: access a resource only with a token above the highest it has
-- seen, or equal to it from the same holder; an accepted token becomes the highest.
-- KEYS[1]: the resource (a string); KEYS[2]: its fence record, '<token>:<holder digest>'
-- (same cluster slot; a bare '<token>' from older versions names no holder).
-- ARGV[1]: token, decimal without leading zeros (compared as text: exact for every u64);
-- ARGV[2]: the holder's lock value, '' for an anonymous access; ARGV[3]: 'get' or 'set';
-- ARGV[4]: the value to set.
-- Returns {1, value-or-false} when accepted, {0, highest} when refused.
local function compare(a, b)
  if #a ~= #b then
    return #a < #b and -1 or 1
  end
  if a == b then
    return 0
  end
  return a < b and -1 or 1
end
local holder = ''
if ARGV[2] ~= '' then
  holder = redis.sha1hex(ARGV[2])
end
local record = redis.call('GET', KEYS[2])
local claim = true
if record then
  local colon = string.find(record, ':', 1, true)
  local highest, owner = record, nil
  if colon then
    highest = string.sub(record, 1, colon - 1)
    owner = string.sub(record, colon + 1)
  end
  local order = compare(ARGV[1], highest)
  if order < 0 or (order == 0 and owner ~= nil and owner ~= holder) then
    return {0, highest}
  end
  claim = order > 0 or owner == nil
end
if claim then
  redis.call('SET', KEYS[2], ARGV[1] .. ':' .. holder)
end
if ARGV[3] == 'set' then
  redis.call('SET', KEYS[1], ARGV[4])
  return {1, false}
end
return {1, redis.call('GET', KEYS[1])}
