--[[
  put: write a config document with compare-and-set on its revision (CONTRACT §6, D32).

  KEYS[1]  cfg:<scope>:<scope_id>
  ARGV[1]  scope
  ARGV[2]  scope_id
  ARGV[3]  data as JSON text (an object). Spliced in verbatim, never re-encoded by cjson, which
           would turn [] into {} and round numbers to 14 digits.
  ARGV[4]  expected revision, or '' for an unconditional write
  ARGV[5]  updated_at (RFC 3339, caller's clock: scripts never read time themselves)
  ARGV[6]  meta patch as JSON object text, or '' to keep meta untouched. Members set to null are
           removed. meta is server-owned: data writes never replace it.

  Returns {1, new_revision} on success (revision = current + 1, 0 when missing),
          {-1, current_revision} on a revision mismatch,
          {-2, 0} when the stored document is not parseable JSON.
]]
local current_rev = 0
local meta = {}
local raw = redis.call('GET', KEYS[1])
if raw then
  local ok, doc = pcall(cjson.decode, raw)
  if not ok or type(doc) ~= 'table' then return {-2, 0} end
  current_rev = tonumber(doc['revision']) or 0
  if type(doc['meta']) == 'table' then meta = doc['meta'] end
end

if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= current_rev then
  return {-1, current_rev}
end

if ARGV[6] ~= '' then
  local patch = cjson.decode(ARGV[6])
  for k, v in pairs(patch) do
    if v == cjson.null then meta[k] = nil else meta[k] = v end
  end
end

-- cjson encodes an empty table as {} (an object), which is what meta is.
local new_rev = current_rev + 1
local out = '{"scope":' .. cjson.encode(ARGV[1]) ..
  ',"scope_id":' .. cjson.encode(ARGV[2]) ..
  ',"data":' .. ARGV[3] ..
  ',"revision":' .. string.format('%d', new_rev) ..
  ',"updated_at":' .. cjson.encode(ARGV[5]) ..
  ',"meta":' .. cjson.encode(meta) .. '}'
redis.call('SET', KEYS[1], out)
return {1, new_rev}
