-- Token bucket shared by every gateway replica (D24). One key per tenant (or
-- client IP); the caller passes `now` so the script is deterministic.
-- Guarantee: accepted requests in any T seconds <= burst + rps * T, across
-- replicas, because every decision is this one atomic read-modify-write.
-- KEYS[1] cordum:rl:{<key>}   hash {t = tokens, ts = last refill ms}
-- ARGV[1] now (epoch ms)
-- ARGV[2] rps (tokens per second, > 0, may be fractional)
-- ARGV[3] burst (bucket capacity, >= 1)
-- ARGV[4] count (requests waiting on this bucket, >= 1: a gateway sends the
--         requests that arrived while its previous call for the key was in
--         flight as one call; each takes one token)
-- returns {granted, retry_after_ms}: the first `granted` requests are accepted
--         (granted = min(count, whole tokens)); when granted < count the rest
--         are rejected and retry_after_ms is the time to the next whole token.
--         With count 1: {1, 0} accepted, {0, retry_after_ms} rejected.
local now = tonumber(ARGV[1])
local rps = tonumber(ARGV[2])
local burst = tonumber(ARGV[3])
local count = tonumber(ARGV[4])
local cur = redis.call('HMGET', KEYS[1], 't', 'ts')
local tokens = tonumber(cur[1])
local ts = tonumber(cur[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
-- A replica whose clock is behind never refills backwards (ts only moves forward).
if now > ts then
  tokens = tokens + (now - ts) * rps / 1000
  ts = now
end
-- Also clamps a bucket after burst was lowered live.
if tokens > burst then tokens = burst end
local granted = math.min(count, math.floor(tokens))
if granted < 0 then granted = 0 end
tokens = tokens - granted
local retry = 0
if granted < count then
  retry = math.ceil((1 - tokens) * 1000 / rps)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'ts', tostring(ts))
-- 2x the time to refill from empty (CONTRACT §5); an expired bucket is a full one anyway.
redis.call('PEXPIRE', KEYS[1], math.max(1000, math.ceil(2 * burst * 1000 / rps)))
return {granted, retry}
