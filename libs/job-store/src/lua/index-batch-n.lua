-- One event-loop turn of index updates (index-writer.ts) in one call. On
-- standalone Redis all of them; on a cluster the keys span hash slots (tenant
-- indexes, job:active, job:retry, job:deadline), so the writer sends one call
-- per hash tag (a tenant's listings share a slot, P279) and untagged keys as
-- separate commands. Atomic, so "every ZADD before any ZREM" (D16) always holds.
-- KEYS   the ZADD keys, then the PEXPIRE keys, then the ZREM keys
-- ARGV[1..3] how many keys of each kind
-- then, per ZADD key: its pair count and its score/member pairs;
--       per PEXPIRE key: its TTL in ms;
--       per ZREM key: its member count and its members
-- returns the number of keys written
local nAdd, nExp, nRem = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
-- unpack() is bounded by the Lua stack: large batches go in chunks.
local CHUNK = 1000
local function chunked(cmd, key, first, count, width)
  local done = 0
  while done < count do
    local n = math.min(CHUNK, count - done)
    local from = first + done * width
    redis.call(cmd, key, unpack(ARGV, from, from + n * width - 1))
    done = done + n
  end
end
local a, k = 4, 1
for _ = 1, nAdd do
  local c = tonumber(ARGV[a])
  chunked('ZADD', KEYS[k], a + 1, c, 2)
  a, k = a + 1 + 2 * c, k + 1
end
for _ = 1, nExp do
  redis.call('PEXPIRE', KEYS[k], ARGV[a])
  a, k = a + 1, k + 1
end
for _ = 1, nRem do
  local c = tonumber(ARGV[a])
  chunked('ZREM', KEYS[k], a + 1, c, 1)
  a, k = a + 1 + c, k + 1
end
return k - 1
