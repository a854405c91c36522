-- args: bodies file, first line to send (1-based), and optionally the
-- path and content type (default: /agent/auth, JSON)
local bodies = {}
local path, ctype = "/agent/auth", "application/json"
i = 0 -- global: done() reads it from the thread
function init(args)
  local first = tonumber(args[2])
  if args[3] then path = args[3] end
  if args[4] then ctype = args[4] end
  local n = 0
  for line in io.lines(args[1]) do
    n = n + 1
    if n >= first then bodies[#bodies + 1] = line end
  end
end
function request()
  i = i + 1
  return wrk.format("POST", path, {["Content-Type"] = ctype}, bodies[i])
end
local threads = {}
function setup(t) threads[#threads + 1] = t end
function done()
  local f = io.open("sent", "w")
  f:write(threads[1]:get("i"))
  f:close()
end
