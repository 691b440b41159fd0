package ratelimit

import "github.com/redis/go-redis/v9"

// The scripts share one preamble that reads Redis's clock and the adaptive
// state, and computes the current shared rate. Every time is in seconds
// since 2017-01-01 on Redis's clock (as in redis_rate, so that a float keeps
// microseconds), so pods with skewed clocks agree.
//
// KEYS[1] string: the GCRA theoretical arrival time (TAT).
// KEYS[2] hash: the adaptive state; fields
//
//	est       the estimated quota (req/s): the quota a 429 named, or the
//	          rate at which the last 429s came; absent: no estimate
//	start     the rate set by the last cut (req/s)
//	cut       time of the last cut
//	cooldown  no grants before this time
//	window    429s reported before this time belong to the last episode
//	last      time of the last episode's first 429
//
// ARGV[1] configured rate (req/s), ARGV[2] configured burst, ARGV[3] floor
// of the rate (req/s), ARGV[4] margin, ARGV[5] recovery (s), ARGV[6] hold
// (s), ARGV[7] probe gain (fraction of est per s³).
//
// The rate is a function of the time since the last cut, so no process
// runs a background loop and a missing hash means "the configured rate":
//
//	plateau = margin·est
//	[0, recovery)      start → plateau, concave (CUBIC's return to W_max)
//	[recovery, hold)   plateau: just under the quota
//	[hold, …)          plateau + gain·est·(t − hold)³, convex: probe above
//	                   the estimate, slowly at first, until the configured rate
//
// capped at the configured rate, and never below the floor (or below the
// plateau when a known quota is under the floor).
const preamble = `
redis.replicate_commands()
local max_rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local min_rate = tonumber(ARGV[3])
local margin = tonumber(ARGV[4])
local recovery = tonumber(ARGV[5])
local hold = tonumber(ARGV[6])
local gain = tonumber(ARGV[7])

local t = redis.call("TIME")
local now = (t[1] - 1483228800) + t[2] / 1000000

local st = redis.call("HMGET", KEYS[2], "est", "start", "cut", "cooldown", "window", "last")
local est = tonumber(st[1])
local start = tonumber(st[2]) or 0
local cut = tonumber(st[3]) or 0
local cooldown = tonumber(st[4]) or 0
local window = tonumber(st[5]) or 0
local last = tonumber(st[6])

local function rate_at(at)
  if not est then
    return max_rate
  end
  local plateau = margin * est
  local d = at - cut
  local r = plateau
  if d < recovery and start < plateau then
    local f = 1 - d / recovery
    r = plateau - (plateau - start) * f * f * f
  elseif d >= hold then
    local p = d - hold
    r = plateau + gain * est * p * p * p
  end
  return math.min(max_rate, math.max(math.min(min_rate, plateau), r))
end
local rate = rate_at(now)

-- A lowered rate also lowers the burst, or a full burst would bring the
-- 429s straight back.
local function burst_at(r)
  return math.max(1, math.floor(burst * r / max_rate))
end

-- Floats cross into Redis as text with microseconds: Redis would truncate
-- a number in a reply to an integer.
local function fmt(x)
  return string.format("%.6f", x)
end
`

// takeScript grants one event or says how long to wait. It returns
// {granted (0|1), wait seconds, current rate}. A denial writes nothing.
var takeScript = redis.NewScript(preamble + `
if now < cooldown then
  return {0, fmt(cooldown - now), fmt(rate)}
end
local interval = 1 / rate
local tat = tonumber(redis.call("GET", KEYS[1])) or now
tat = math.max(tat, now)
local new_tat = tat + interval
local allow_at = new_tat - burst_at(rate) * interval
if allow_at > now then
  return {0, fmt(allow_at - now), fmt(rate)}
end
redis.call("SET", KEYS[1], fmt(new_tat), "PX", math.max(1, math.ceil((new_tat - now) * 1000)))
return {1, "0", fmt(rate)}
`)

// throttleScript records a 429. ARGV[8] is the pause to apply (s), ARGV[9]
// the multiplicative decrease (beta), ARGV[10] the quota the 429 named
// (req/s, 0: none), ARGV[11] the isolation (s), ARGV[12] the episode window
// (s).
//
// The first report of an episode decides; reports within its window (calls
// that were in flight) only extend the pause. It is one of:
//
//   - above a named quota (rate > quota): cut to margin·quota at once; the
//     estimate is the quota.
//   - isolated: at least the isolation after the last 429, and at no more
//     than the named quota, or the estimate, or with neither: pause only,
//     the rate is kept.
//   - otherwise (429s keep coming, or a probe above the estimate hit the
//     quota): cut to beta·rate, the estimate is the rate, or
//     rate·(1+beta)/2 when it is below the last estimate (CUBIC's fast
//     convergence), no less than the floor and at most a named quota.
//
// The TAT is moved so that the first grant after the pause is paced rather
// than a burst. It returns {0 same episode | 1 pause only | 2 cut,
// pause left (s), rate}.
var throttleScript = redis.NewScript(preamble + `
local cool = tonumber(ARGV[8])
local beta = tonumber(ARGV[9])
local quota = tonumber(ARGV[10])
local isolation = tonumber(ARGV[11])
local span = tonumber(ARGV[12])
local kind = 0
if now >= window then
  if quota > 0 and rate > quota then
    est = quota
    start = margin * quota
    kind = 2
  elseif (not last or now - last >= isolation) and (quota > 0 or not est or rate <= est) then
    kind = 1
  else
    local c = rate
    if est and rate < est then
      c = rate * (1 + beta) / 2
    end
    c = math.max(c, min_rate / margin)
    if quota > 0 then
      c = math.min(c, quota)
    end
    est = c
    start = math.min(beta * rate, margin * c)
    kind = 2
  end
  if kind == 2 then
    cut = now
    rate = rate_at(now)
  end
  last = now
  window = now + math.max(cool, span)
end
cooldown = math.max(cooldown, now + cool)
local interval = 1 / rate
local resume = cooldown + (burst_at(rate) - 1) * interval
local tat = tonumber(redis.call("GET", KEYS[1])) or now
if resume > tat then
  redis.call("SET", KEYS[1], fmt(resume), "PX", math.max(1, math.ceil((resume - now) * 1000)))
end
local keep = math.max(cooldown, window, last + isolation) - now
local fields = {"cooldown", fmt(cooldown), "window", fmt(window), "last", fmt(last)}
if est then
  local plateau = margin * est
  local full = cut + hold
  if max_rate > plateau then
    full = full + ((max_rate - plateau) / (gain * est)) ^ (1 / 3)
  end
  keep = math.max(keep, full - now)
  for _, v in ipairs({"est", fmt(est), "start", fmt(start), "cut", fmt(cut)}) do
    table.insert(fields, v)
  end
end
redis.call("HSET", KEYS[2], unpack(fields))
redis.call("PEXPIRE", KEYS[2], math.ceil((keep + 1) * 1000))
return {kind, fmt(cooldown - now), fmt(rate)}
`)

// rateScript reads the current shared rate. It returns {cooldown left (s),
// rate}, the cooldown left being 0 or negative when none is active.
var rateScript = redis.NewScript(preamble + `
return {fmt(cooldown - now), fmt(rate)}
`)
