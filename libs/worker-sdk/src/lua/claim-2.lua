-- claim-2: decide whether this worker may run one dispatch of a job (D1).
-- KEYS[1] worker:claim:{<job_id>}  hash {attempt, dispatch_id, worker_id}: highest dispatch claimed
-- KEYS[2] job:meta:{<job_id>}      the job record written by job-store (may be absent)
-- ARGV[1] attempt (integer) ARGV[2] dispatch_id ARGV[3] worker_id ARGV[4] claim ttl ms
-- returns  1 claimed: run it
--          0 duplicate: this dispatch was already claimed (redelivery)
--         -1 stale: a newer attempt of the job was already claimed
--         -2 not current: the job record names another dispatch, or has no dispatch out
--            (a state other than DISPATCHED or RUNNING: between attempts, the record still
--            names the ended one, which a worker may have answered without claiming it)
--         -3 terminal: the job record is already in a terminal state
-- Both keys share the {<job_id>} hash tag, so the script is Redis Cluster safe.
-- The job record is read fail-open: absent, foreign or unparseable → ignored,
-- so the SDK also works beside a control plane that keeps no such record.
local meta = redis.call('HMGET', KEYS[2], 'state', 'dispatch')
local meta_state = meta[1]
if meta_state then
  if meta_state == 'SUCCEEDED' or meta_state == 'FAILED' or meta_state == 'CANCELLED'
    or meta_state == 'TIMEOUT' or meta_state == 'DENIED' or meta_state == 'OUTPUT_QUARANTINED' then
    return -3
  end
  if meta_state ~= 'DISPATCHED' and meta_state ~= 'RUNNING' then return -2 end
  local raw = meta[2]
  if raw then
    local ok, d = pcall(cjson.decode, raw)
    if ok and type(d) == 'table' and type(d['dispatchId']) == 'string' and d['dispatchId'] ~= ''
      and d['dispatchId'] ~= ARGV[2] then
      return -2
    end
  end
end
local cur = redis.call('HMGET', KEYS[1], 'attempt', 'dispatch_id')
if cur[2] then
  if cur[2] == ARGV[2] then return 0 end
  if tonumber(cur[1]) >= tonumber(ARGV[1]) then return -1 end
end
redis.call('HSET', KEYS[1], 'attempt', ARGV[1], 'dispatch_id', ARGV[2], 'worker_id', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
