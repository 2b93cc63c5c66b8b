-- Release an idempotency claim only if it still names our job (D25).
-- A claim is deleted when the request ends without a job, or when the job was
-- failed at submit (D11 bus_unavailable) so the client's retry can succeed.
-- KEYS[1] job:idempotency:<tenant>:<key>
-- ARGV[1] job_id that made the claim
-- returns 1 deleted, 0 the claim is absent or names another job
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
