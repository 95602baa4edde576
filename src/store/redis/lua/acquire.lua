-- Fenced, idempotent acquire.
-- KEYS[1]: lock key; KEYS[2]: its fence counter; KEYS[3]: its aborted attempts (a hash);
-- KEYS[4]: its claims (a hash: '#' = the token of the key's current incarnation, and one
-- field per attempt that armed it since it was created and was not retired since);
-- KEYS[5]: the key's own fence counter of earlier versions (KEYS[2] itself when that is
-- still the layout). All in one cluster slot.
-- ARGV[1]: lock value; ARGV[2]: expiration in milliseconds; ARGV[3]: this attempt's id.
-- Returns the fencing token when the key is now held by ARGV[1] (an integer, or its
-- decimal text from 2^53 on: a Lua number is a double and would round it); when another
-- value holds the key, -2 - its remaining time to live in milliseconds (0 if it has no
-- expiry); -1 when this attempt was aborted by its client (it reached the server after
-- its caller gave up on it) and did nothing.
-- A same-value re-arm never shortens the key's time to live.
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then
  return -1
end
local current = redis.call('GET', KEYS[1])
if current == false then
  if KEYS[5] ~= KEYS[2] then
    -- Tokens never go back across an upgrade: a counter of the earlier layout is merged.
    local legacy = redis.call('GET', KEYS[5])
    if legacy then
      local now = redis.call('GET', KEYS[2]) or '0'
      if #legacy > #now or (#legacy == #now and legacy > now) then
        redis.call('SET', KEYS[2], legacy)
      end
      redis.call('DEL', KEYS[5])
    end
  end
  local token = redis.call('INCR', KEYS[2])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('DEL', KEYS[4])
  redis.call('HSET', KEYS[4], '#', redis.call('GET', KEYS[2]), ARGV[3], '1')
  redis.call('PEXPIRE', KEYS[4], ARGV[2])
  if token >= 9007199254740992 then
    return redis.call('GET', KEYS[2])
  end
  return token
end
if current == ARGV[1] then
  -- Same value: an earlier attempt (maybe one that timed out) landed. Re-arm, keep the token.
  local left = redis.call('PTTL', KEYS[1])
  if left >= 0 and left < tonumber(ARGV[2]) then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
  end
  local token = redis.call('HGET', KEYS[4], '#')
  if token == false then
    -- No claims (set by hand, or lost in a restart): this is a new incarnation.
    redis.call('INCR', KEYS[2])
    token = redis.call('GET', KEYS[2])
    redis.call('HSET', KEYS[4], '#', token)
  end
  redis.call('HSET', KEYS[4], ARGV[3], '1')
  local kept = redis.call('PTTL', KEYS[1])
  if kept > 0 then
    redis.call('PEXPIRE', KEYS[4], kept)
  else
    redis.call('PERSIST', KEYS[4])
  end
  return token
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  return 0
end
return -2 - ttl
