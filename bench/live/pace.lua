-- Paced wrk traffic for bench/live.py: `wrk -t1 -cC -dD -s pace.lua URL -- RATE C`.
-- Debian's wrk has no -R, so each connection waits a random delay before its next request (uniform,
-- mean C/RATE s, so the requests of C connections come at about RATE per second). Once a second the
-- mean delay is corrected by the ratio of the requests answered in the last second to RATE, so a slower
-- server (longer answers, less time left to wait) keeps the same rate. done() prints one JSON line.

local rate = 100
local mean_ms = 10
local answered = 0
local second = 0

function init(args)
   rate = tonumber(args[1]) or rate
   mean_ms = (tonumber(args[2]) or 1) * 1000 / rate
   math.randomseed(os.time())
end

function delay()
   return math.random() * 2 * mean_ms
end

function response(status, headers, body)
   local now = os.time()
   if now ~= second then
      if second ~= 0 and answered > 0 then
         local ratio = answered / rate
         if ratio < 0.5 then ratio = 0.5 elseif ratio > 2 then ratio = 2 end
         mean_ms = math.max(0.1, mean_ms * (ratio ^ 0.5))
      end
      second = now
      answered = 0
   end
   answered = answered + 1
end

function done(summary, latency, requests)
   local errors = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_s": %.3f, "connect_errors": %d, "read_errors": %d, ' ..
      '"write_errors": %d, "timeouts": %d, "non_2xx": %d}\n',
      summary.requests, summary.duration / 1e6, errors.connect, errors.read, errors.write,
      errors.timeout, errors.status))
end
