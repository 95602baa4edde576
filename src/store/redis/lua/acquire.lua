-- Fenced, idempotent acquire (protocol v2: the value is the holder's identity).
-- KEYS[1]: lock key.
-- KEYS[2]: its state, '<token> <creator>[ <locked at, ms> <holder label>]': the token of
--   the key's current (or last) incarnation and the attempt that created it. It outlives
--   the lock by ARGV[5] ms, so that the next acquisition's token follows its token.
-- KEYS[3]: this client's record of aborted attempts on the key: the highest attempt
--   number its client gave up on (every attempt of the client up to it is refused).
-- KEYS[4], KEYS[5]: fence counters of the earlier layout (shared, and the key's own),
--   read only when the state is gone: a token never goes back across the upgrade.
-- All in one cluster slot.
-- ARGV[1]: lock value; ARGV[2]: expiration, ms; ARGV[3]: this attempt's id; ARGV[4]: its
-- number; ARGV[5]: how much longer than the lock its state lives, ms; ARGV[6]: the holder
-- label ('': none, and no time is recorded).
-- Returns the fencing token (decimal text) when the key is now held by ARGV[1]; when
-- another value holds the key, -2 - its remaining time to live in ms (0: no expiry); -1
-- when this attempt was aborted by its client before it arrived (nothing done).
-- A same-value re-arm sets the expiration given (shorter or longer) and keeps the token.
local aborted = redis.call('GET', KEYS[3])
if aborted and tonumber(aborted) >= tonumber(ARGV[4]) then
  return -1
end
local current = redis.call('GET', KEYS[1])
if current == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  local state = redis.call('GET', KEYS[2])
  if state then
    redis.call('PEXPIRE', KEYS[2], ARGV[2] + ARGV[5])
    return string.match(state, '^%d+')
  end
  -- Set by hand (no state): a new incarnation, below.
elseif current then
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then
    return 0
  end
  return -2 - ttl
end
-- Decimal text (no leading zeros) + 1, and comparison: exact for every u64.
local function incr(d)
  local i = #d
  while i > 0 and string.byte(d, i) == 57 do
    i = i - 1
  end
  if i == 0 then
    return '1' .. string.rep('0', #d)
  end
  return string.sub(d, 1, i - 1) .. string.char(string.byte(d, i) + 1) .. string.rep('0', #d - i)
end
local function above(a, b)
  if #a ~= #b then
    return #a > #b
  end
  return a > b
end
local token
local state = redis.call('GET', KEYS[2])
if state then
  token = incr(string.match(state, '^%d+'))
else
  -- No state (first use, or unused for longer than it lives): the server's clock in
  -- microseconds, above every token issued before it (they rose by one per acquisition
  -- from a clock reading taken earlier), and above the counters of the earlier layout.
  local now = redis.call('TIME')
  token = now[1] .. string.format('%06d', tonumber(now[2]))
  for i = 4, 5 do
    local legacy = redis.call('GET', KEYS[i])
    if legacy and string.match(legacy, '^%d+$') and not above(token, legacy) then
      token = incr(legacy)
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local record = token .. ' ' .. ARGV[3]
if ARGV[6] ~= '' then
  local now = redis.call('TIME')
  record = record .. ' ' .. now[1] .. string.format('%03d', math.floor(tonumber(now[2]) / 1000)) .. ' ' .. ARGV[6]
end
redis.call('SET', KEYS[2], record, 'PX', ARGV[2] + ARGV[5])
return token
