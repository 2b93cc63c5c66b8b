--[[
  P248: the entries of a ZSET index after a given one, newest first, by rank. Read by score from
  the top of the entry's score instead, a batch would re-read every entry of that score above it,
  and a large group of entries sharing one score cost a page quadratic reads. Atomic, so the
  entry's rank cannot move between the two reads.
  KEYS[1]  the index
  ARGV[1]  the entry's score, ARGV[2] its member, ARGV[3] how many to return
  Returns  {member, score, ...} (ZREVRANGE WITHSCORES) after the entry, or false when the entry is
           no longer there with that score (the caller then reads by score)
]]
local s = redis.call('ZSCORE', KEYS[1], ARGV[2])
if not s or tonumber(s) ~= tonumber(ARGV[1]) then return false end
local r = redis.call('ZREVRANK', KEYS[1], ARGV[2])
return redis.call('ZREVRANGE', KEYS[1], r + 1, r + tonumber(ARGV[3]), 'WITHSCORES')
