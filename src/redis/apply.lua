local dedup = tonumber(ARGV[1])
if dedup > 0 then
  if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', dedup) then return 0 end
end
local i = 3
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'i' then
    -- Saturate at the 64-bit limits instead of failing, as the memory store does.
    local r = redis.pcall('HINCRBY', KEYS[1], ARGV[i+1], ARGV[i+2])
    if type(r) == 'table' and r.err then
      if string.find(r.err, 'overflow') then
        local lim = '9223372036854775807'
        if string.sub(ARGV[i+2], 1, 1) == '-' then lim = '-9223372036854775808' end
        redis.call('HSET', KEYS[1], ARGV[i+1], lim)
      else
        return redis.error_reply(r.err)
      end
    end
    i = i + 3
  elseif op == 'f' then
    redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i+1], ARGV[i+2]); i = i + 3
  elseif op == 's' then
    redis.call('HSET', KEYS[1], ARGV[i+1], ARGV[i+2]); i = i + 3
  else
    local f = ARGV[i+1]
    local first = tonumber(ARGV[i+2])
    local cap = tonumber(ARGV[i+3])
    local lo = tonumber(redis.call('HGET', KEYS[1], f .. '|lo') or first)
    if lo < first then
      local stop = math.min(first - 1, lo + cap - 1)
      for b = lo, stop do
        redis.call('HDEL', KEYS[1], string.format('%s|%d', f, b))
      end
      lo = first
    end
    redis.call('HSET', KEYS[1], f .. '|lo', string.format('%d', lo))
    i = i + 4
  end
end
local ttl = tonumber(ARGV[2])
if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
return 1
