-- wrk script for scripts/load-unknown.sh: GET /api/whoami with the valid
-- keys of valid.txt; every other request instead with a made-up key of
-- junk.txt, each used once (MIX=1), or with no credential at all (MIX=2,
-- the cheapest refusal, for comparison). Counts 200s and 401s and prints
-- the rate of each.
local valid, junk = {}, {}
-- Globals: done() reads ok and refused from each thread.
n, ok, refused, start = 0, 0, 0, 0
local mix = os.getenv("MIX") == "1"
local bare = os.getenv("MIX") == "2"
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  for l in io.lines("valid.txt") do valid[#valid + 1] = l end
  if mix then
    for l in io.lines("junk.txt") do junk[#junk + 1] = l end
    -- Each run starts somewhere else in the list.
    math.randomseed(os.time())
    start = math.random(#junk)
  end
end

function request()
  n = n + 1
  if bare and n % 2 == 0 then
    return wrk.format("GET", "/api/whoami")
  end
  local token
  if mix and n % 2 == 0 then
    token = junk[(start + math.floor(n / 2)) % #junk + 1]
  else
    token = valid[n % #valid + 1]
  end
  return wrk.format("GET", "/api/whoami", { ["Authorization"] = "Bearer " .. token })
end

function response(status, headers, body)
  if status == 200 then ok = ok + 1 elseif status == 401 then refused = refused + 1 end
end

function done(summary, latency, requests)
  local total_ok, total_refused = 0, 0
  for _, t in ipairs(threads) do
    total_ok = total_ok + t:get("ok")
    total_refused = total_refused + t:get("refused")
  end
  local secs = summary.duration / 1e6
  io.write(string.format("valid/s %.0f unknown/s %.0f p99_ms %.2f\n",
    total_ok / secs, total_refused / secs, latency:percentile(99) / 1000))
end
