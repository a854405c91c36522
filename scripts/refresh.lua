-- Refresh rotation under load (scripts/load-matrix.sh, scenario refresh):
-- refresh.txt holds one live refresh token per connection, each the head
-- of its own family. A request takes a token from the pool; its answer
-- puts the successor back. wrk sends a connection's next request only
-- after its answer, so the pool never runs dry and no token is sent twice
-- (which would revoke its family as a reuse). wrk builds one request per
-- thread that it never sends, so the pool holds a few spare chains.
local pool = {}
function init(args)
  for line in io.lines("refresh.txt") do pool[#pool + 1] = line end
end
function request()
  local t = table.remove(pool)
  if not t then t = "amd_rt_exhausted" end
  return wrk.format("POST", "/agent/identity", {["Content-Type"] = "application/json"},
    '{"type":"refresh","refresh_token":"' .. t .. '"}')
end
function response(status, headers, body)
  local t = string.match(body, '"refresh_token":{"value":"(amd_rt_[%w_]+)"')
  if t then pool[#pool + 1] = t end
end
