-- Resource-side fencing: access a resource only with a token at least as high as the
-- highest it has seen, and remember the token.
-- KEYS[1]: the resource (a string); KEYS[2]: its highest-token key (same cluster slot).
-- ARGV[1]: token; ARGV[2]: 'get' or 'set'; ARGV[3]: the value to set.
-- Returns {1, value-or-false} when accepted, {0, highest} when the token is stale.
local highest = tonumber(redis.call('GET', KEYS[2]) or '0')
local token = tonumber(ARGV[1])
if token < highest then
  return {0, highest}
end
if token > highest then
  redis.call('SET', KEYS[2], ARGV[1])
end
if ARGV[2] == 'set' then
  redis.call('SET', KEYS[1], ARGV[3])
  return {1, false}
end
return {1, redis.call('GET', KEYS[1])}
