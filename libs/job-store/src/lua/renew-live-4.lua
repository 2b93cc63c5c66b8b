--[[
  P244: renew a live job's lifetime. A job's keys get the job TTL when it is created (D45) and
  no write renews them, so a job that ran, or waited for a worker, longer than JOB_TTL lost its
  record while still in flight (its result was then ignored as unknown). The scheduler's lifetime
  keeper runs this for every member of the job:active:<state> indexes.
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  job:fence:{<id>}
  KEYS[3]  job:decisions:{<id>}
  KEYS[4]  worker:claim:{<id>}  (worker-sdk's claim, P9: it must not expire under a running attempt)
  ARGV[1]  the job TTL in ms
  ARGV[2]  renew when the record has less than this many ms left
  Returns  {0}  not live: no record, a record that has ended (it keeps the lifetime its end gave
                it) or one without a TTL
           {1 renewed | 2 had enough left, the record's ms left, state, tenant (JSON),
            concurrency (JSON or false), idempotency key (JSON or false)}: the caller gives the
           job's keys in other slots (its input, listings, concurrency group, the submit's
           idempotency claim) at least the record's life, every run, so a run that failed
           half-way is made good by the next one.
]]
local meta = redis.call('HMGET', KEYS[1], 'state', 'tenant', 'concurrency', 'idempotencyKey')
local state = meta[1]
if state ~= 'PENDING' and state ~= 'SCHEDULED' and state ~= 'DISPATCHED' and state ~= 'RUNNING' and state ~= 'RETRYING' then
  return {0}
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then return {0} end
if left >= tonumber(ARGV[2]) then return {2, left, state, meta[2], meta[3], meta[4]} end
-- GT: never shortens a key's life (a claim written with a longer claimTtlMs); a key without a TTL keeps none.
for i = 1, 4 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1], 'GT')
end
return {1, tonumber(ARGV[1]), state, meta[2], meta[3], meta[4]}
