package ratelimit

import "github.com/redis/go-redis/v9"

// The scripts share one preamble that reads Redis's clock and the adaptive
// state, and computes the current shared rate. Every time is in seconds
// since 2017-01-01 on Redis's clock (as in redis_rate, so that a float keeps
// microseconds), so pods with skewed clocks agree.
//
// KEYS[1] string: the GCRA theoretical arrival time (TAT).
// KEYS[2] hash: the adaptive state; fields rate (req/s set at the last
// 429), throttled (time of the last 429), cooldown (no grants before this
// time) and decrease (no further decrease before this time).
//
// ARGV[1] configured rate (req/s), ARGV[2] configured burst, ARGV[3] floor
// of the rate (req/s), ARGV[4] recovery step (req/s), ARGV[5] quiet period (s).
//
// The rate recovers lazily: it is rate + step × whole quiet periods since the
// last 429, capped at the configured rate, so no process needs to run a
// background loop and a missing hash means "fully recovered".
const preamble = `
redis.replicate_commands()
local max_rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local min_rate = tonumber(ARGV[3])
local step = tonumber(ARGV[4])
local quiet = tonumber(ARGV[5])

local t = redis.call("TIME")
local now = (t[1] - 1483228800) + t[2] / 1000000

local st = redis.call("HMGET", KEYS[2], "rate", "throttled", "cooldown", "decrease")
local rate = max_rate
local throttled = tonumber(st[2]) or 0
local cooldown = tonumber(st[3]) or 0
local decrease = tonumber(st[4]) or 0
if tonumber(st[1]) then
  rate = math.min(max_rate, tonumber(st[1]))
  local quiet_for = now - throttled
  if quiet_for >= quiet then
    rate = math.min(max_rate, rate + math.floor(quiet_for / quiet) * step)
  end
end

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

// throttleScript records a 429. ARGV[6] is the cooldown to apply (s), ARGV[7]
// the multiplicative decrease, ARGV[8] the shortest time between two
// decreases (s). A storm of 429s from requests already in flight lowers the
// rate once: further reports only extend the cooldown and the quiet period.
// The TAT is moved so that the first grant after the cooldown is paced
// rather than a burst. It returns {decreased (0|1), cooldown left (s), rate}.
var throttleScript = redis.NewScript(preamble + `
local cool = tonumber(ARGV[6])
local beta = tonumber(ARGV[7])
local window = tonumber(ARGV[8])
local decreased = 0
if now >= decrease then
  rate = math.max(math.min(min_rate, rate), rate * beta)
  decrease = now + window
  decreased = 1
end
cooldown = math.max(cooldown, now + cool)
local interval = 1 / rate
local resume = cooldown + (burst_at(rate) - 1) * interval
local tat = tonumber(redis.call("GET", KEYS[1])) or now
if resume > tat then
  redis.call("SET", KEYS[1], fmt(resume), "PX", math.max(1, math.ceil((resume - now) * 1000)))
end
redis.call("HSET", KEYS[2], "rate", fmt(rate), "throttled", fmt(now), "cooldown", fmt(cooldown), "decrease", fmt(decrease))
local keep = math.max(cooldown, decrease) - now
if rate < max_rate then
  keep = math.max(keep, math.ceil((max_rate - rate) / step) * quiet)
end
redis.call("PEXPIRE", KEYS[2], math.ceil((keep + 1) * 1000))
return {decreased, fmt(cooldown - now), fmt(rate)}
`)

// rateScript reads the current shared rate. It returns {cooldown left (s),
// rate}, the cooldown left being 0 or negative when none is active.
var rateScript = redis.NewScript(preamble + `
return {fmt(cooldown - now), fmt(rate)}
`)
