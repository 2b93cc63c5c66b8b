--[[
  P22: create a job's DLQ entry once (SET NX), unless an operator deleted it. A job never
  re-enters a DLQ state, so a write after the delete is a re-run (a redelivered result, a late
  sys.job.dlq notice) and must not bring the entry back, not even for a moment: a check after
  the SET left the entry readable (and retryable) until the undo landed.
  The tombstone's hash tag is the entry's key name, so both keys share one cluster slot.
  KEYS[1]  dlq:entry:<id>
  KEYS[2]  {dlq:entry:<id>}:deleted
  ARGV[1]  the entry (JSON)
  ARGV[2]  when it expires (ms since the epoch: DLQ_TTL from the job's end, so a re-run never moves it, P304)
  Returns  1 created, 0 already there, -1 deleted (nothing written)
]]
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[2], 'NX') then return 1 end
return 0
