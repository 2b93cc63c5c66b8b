--[[
  P244: renew a live job's lifetime. A job's keys get the job TTL when it is created (D45) and
  no write renews them, so a job that runs, or waits for a worker, longer than JOB_TTL lost its
  record while still in flight (its result was then ignored as unknown). The scheduler's lifetime
  keeper runs this for every member of the job:active:<state> indexes.
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  job:fence:{<id>}
  KEYS[3]  job:decisions:{<id>}
  KEYS[4]  worker:claim:{<id>}  (worker-sdk's claim, P9: it must not expire under a running attempt)
  ARGV[1]  the job TTL in ms
  ARGV[2]  renew when the record has less than this many ms left
  Returns  1 renewed (the caller renews ctx:<id>, in another slot), 0 not: no record, a record
           that has ended (it keeps the lifetime its end gave it), one without a TTL, or one with
           enough time left.
]]
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'PENDING' and state ~= 'SCHEDULED' and state ~= 'DISPATCHED' and state ~= 'RUNNING' and state ~= 'RETRYING' then
  return 0
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 or left >= tonumber(ARGV[2]) then return 0 end
-- GT: never shortens a key's life (a claim written with a longer claimTtlMs); a key without a TTL keeps none.
for i = 1, 4 do
  redis.call('PEXPIRE', KEYS[i], ARGV[1], 'GT')
end
return 1
