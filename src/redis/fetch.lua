local cap = tonumber(ARGV[1])
local total = 0
for i = 2, #ARGV do
  total = total + redis.call('HSTRLEN', KEYS[1], ARGV[i])
  if total > cap then
    return redis.error_reply('ELVONTOOBIG ' .. total .. ' bytes or more, over the cap of ' .. cap)
  end
end
if #ARGV < 2 then return {} end
return redis.call('HMGET', KEYS[1], unpack(ARGV, 2))
