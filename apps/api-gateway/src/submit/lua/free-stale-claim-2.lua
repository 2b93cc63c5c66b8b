--[[
  P307: free an idempotency claim whose winner was taken for dead (no record 30 s after the claim),
  in one step with the check that its record still does not exist. Read and deleted apart, a frozen
  winner's create could land in between: the claim still named its job, so the create went through,
  the delete then took the claim of a job that exists, and the waiting duplicate claimed the key
  for a second job (two jobs, both run, for one key). Standalone Redis only: on a cluster the two
  keys live in different slots (P21's window).
  KEYS[1]  job:idempotency:<tenant>:<key>
  KEYS[2]  job:meta:{<id>}
  ARGV[1]  the job id the claim names
  Returns  1 freed, 0 the claim names another job (or none), or the job's record exists
]]
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
return redis.call('DEL', KEYS[1])
