--[[
  Create a job record once (idempotent on id), with its first safety decision and, on standalone
  Redis, the index entries a new job gets, in the same atomic step: a record never exists in no
  index, so a gateway killed right after its create still leaves a job the replayer finds in
  job:active:PENDING (D13) and an approver finds in the approvals list. On a cluster the index
  keys live in other slots; the caller passes none here and writes them first (store.ts).
  KEYS[1]  job:meta:{<id>}
  KEYS[2]  job:fence:{<id>}      (seeded to 0 with the job TTL, so the lock's INCR keeps that TTL, CONTRACT §5)
  KEYS[3]  job:decisions:{<id>}  (history; same tag)
  KEYS[4..3+n]  index keys (sorted sets) to add the job to (standalone only; n may be 0)
  KEYS[4+n]  with ARGV[5] = '1': the submit's idempotency claim (D25), which must still name the job
  ARGV[1]  record TTL in ms (JOB_TTL)
  ARGV[2]  decision history entry (JSON) to append when created, '' for none
  ARGV[3]  n, the number of index keys
  ARGV[4]  the job id (their member, and the claim's value)
  ARGV[5]  '1' when KEYS[4+n] is a claim to check, '' otherwise
  ARGV[6]  with a claim: the value it takes once the record is written (its TTL kept), '' to
           leave it (P249: a DLQ retry's claim is marked '<id>:created' with its job, so no crash
           between the two can leave a created job's claim looking like a dead winner's)
  ARGV[7..6+n]  the score in each index
  ARGV[7+n..]  field, encoded value, field, encoded value, ... (see codec.ts)
  Returns  {1}                    created: the record is exactly the fields passed, so the caller
                                  already holds it and nothing is read back (issue 7)
           {0, {HGETALL}}         the record already existed (a retried create): it is not touched
           {-6}                   the claim names another job (or none): its holder was taken for
                                  dead after 30 s and another request created the key's job (P21)
]]
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, redis.call('HGETALL', KEYS[1])}
end
local n = tonumber(ARGV[3])
if ARGV[5] == '1' and redis.call('GET', KEYS[4 + n]) ~= ARGV[4] then
  return {-6}
end
-- The entries first: a script is not rolled back, so an index key of the wrong type fails the
-- create before the record exists (an entry without a record is dropped where it is read).
for i = 1, n do
  redis.call('ZADD', KEYS[3 + i], ARGV[6 + i], ARGV[4])
end
redis.call('HSET', KEYS[1], unpack(ARGV, 7 + n))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], '0', 'NX', 'PX', ARGV[1])
if ARGV[2] ~= '' then
  redis.call('RPUSH', KEYS[3], ARGV[2])
  redis.call('PEXPIRE', KEYS[3], ARGV[1])
end
if ARGV[5] == '1' and ARGV[6] ~= '' then
  redis.call('SET', KEYS[4 + n], ARGV[6], 'KEEPTTL')
end
return {1}
