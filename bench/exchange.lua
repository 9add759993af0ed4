-- Authorization-code exchanges at /token, each request with its own code, read from $CODES_FILE (first
-- line: `client_id redirect_uri`, then one `code code_verifier` per line, from `bench/token.mjs` with
-- CODES_OUT). Prints `SUMMARY ok=… other=… errors=… seconds=… codes=…` at the end.
local codes = {}
local client_id, redirect_uri
for line in io.lines(os.getenv("CODES_FILE")) do
  local a, b = line:match("^(%S+) (%S+)$")
  if client_id == nil then
    client_id, redirect_uri = a, b
  else
    codes[#codes + 1] = "grant_type=authorization_code&client_id=" .. client_id .. "&code=" .. a
      .. "&redirect_uri=" .. redirect_uri:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", c:byte()) end)
      .. "&code_verifier=" .. b
  end
end
local next_code = 0
local headers = { ["Content-Type"] = "application/x-www-form-urlencoded" }

request = function()
  next_code = next_code + 1
  -- Past the last code, a spent one: answered 400 invalid_grant and not counted as an exchange.
  return wrk.format("POST", "/token", headers, codes[next_code] or codes[1])
end

done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format("SUMMARY ok=%d other=%d errors=%d seconds=%.3f codes=%d p50_us=%d p99_us=%d\n",
    summary.requests - e.status - errors, e.status, errors, summary.duration / 1e6, #codes,
    latency:percentile(50), latency:percentile(99)))
end
