-- Mark a DLQ retry claim as having its job (P138): the value becomes '<job_id>:created', its TTL
-- kept, only if the claim still names that job. A marked claim is never taken for the claim of a
-- winner that died before its job existed, so a retry after the job's record expired (JOB_TTL,
-- usually shorter than the claim's DLQ_TTL) does not run the dead job again.
-- KEYS[1] dlq:retry:<id>
-- ARGV[1] the job id the claim names
-- ARGV[2] the marked value
-- returns 1 marked (or already marked), 0 the claim is absent or names another job
local v = redis.call('GET', KEYS[1])
if v == ARGV[2] then return 1 end
if v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
