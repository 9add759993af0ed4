-- A fixed MCP `tools/call echo` POST, with an optional bearer token from $TOKEN.
-- At the end prints one line: `SUMMARY rps=… p50_us=… p99_us=… errors=… non2xx=… requests=…`.
wrk.method = "POST"
wrk.body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"text":"hello"}}}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["MCP-Protocol-Version"] = "2025-11-25"
local token = os.getenv("TOKEN")
if token and token ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. token
end

-- VARY_SIG=1: every request carries a different signature (six characters before the token's last one
-- replaced at random; the last is kept so the base64url stays canonical and decodes), so no cache can
-- answer and each rejection pays for a full signature check.
if os.getenv("VARY_SIG") == "1" and token and token ~= "" then
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
  local prefix = token:sub(1, #token - 7)
  local last = token:sub(#token)
  math.randomseed(os.time())
  request = function()
    local tail = {}
    for i = 1, 6 do
      local n = math.random(1, #alphabet)
      tail[i] = alphabet:sub(n, n)
    end
    wrk.headers["Authorization"] = "Bearer " .. prefix .. table.concat(tail) .. last
    return wrk.format()
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.timeout
  io.write(string.format("SUMMARY rps=%.0f p50_us=%d p99_us=%d errors=%d non2xx=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6), latency:percentile(50), latency:percentile(99), errors, e.status, summary.requests))
end
