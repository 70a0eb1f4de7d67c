local etag = redis.pcall("HGET", KEYS[1], "version");
if type(etag) == "table" then
  redis.call("DEL", KEYS[1]);
end;
local fwr = redis.pcall("HGET", KEYS[1], "first-write");
if not etag or type(etag)=="table" or etag == "" or etag == ARGV[1] or (not fwr and ARGV[1] == "0") then
  redis.call("HSET", KEYS[1], "data", ARGV[2]);
  if ARGV[3] == "0" then
    redis.call("HSET", KEYS[1], "first-write", 0);
  end;
  return redis.call("HINCRBY", KEYS[1], "version", 1)
else
  return error("failed to set key " .. KEYS[1])
end
