package ratelimit

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"
)

// Limit is a rate: Rate events per Period, of which up to Burst may happen
// back to back after a quiet spell.
type Limit struct {
	Rate   int
	Period time.Duration
	Burst  int
}

// PerSecond returns a limit of n events a second with a burst of n, as
// redis_rate's PerSecond does.
func PerSecond(n int) Limit { return Limit{Rate: n, Period: time.Second, Burst: n} }

// PerMinute returns a limit of n events a minute with a burst of one
// second's share (n/60, at least 1). A full minute's burst would let every
// pod fire the whole quota in the first instant after a restart, which
// gateways that enforce a per-minute quota over shorter windows reject.
func PerMinute(n int) Limit {
	return Limit{Rate: n, Period: time.Minute, Burst: max(1, (n+59)/60)}
}

// perSecond returns the rate in events per second.
func (l Limit) perSecond() float64 { return float64(l.Rate) / l.Period.Seconds() }

// Local returns a per-process x/time/rate limiter at l, for a single
// process that paces itself (enqueue's fleet reads, the benchmark's
// baselines) without the shared limiter.
func (l Limit) Local() *rate.Limiter { return rate.NewLimiter(rate.Limit(l.perSecond()), l.Burst) }

// String formats l the way ParseLimit reads it, such as "10/s:20".
func (l Limit) String() string {
	unit := l.Period.String()
	switch l.Period {
	case time.Second:
		unit = "s"
	case time.Minute:
		unit = "m"
	case time.Hour:
		unit = "h"
	}
	return fmt.Sprintf("%d/%s:%d", l.Rate, unit, l.Burst)
}

// Validate reports whether l can be enforced.
func (l Limit) Validate() error {
	switch {
	case l.Rate <= 0:
		return fmt.Errorf("rate %d: must be positive", l.Rate)
	case l.Period <= 0:
		return fmt.Errorf("period %s: must be positive", l.Period)
	case l.Burst <= 0:
		return fmt.Errorf("burst %d: must be positive", l.Burst)
	}
	return nil
}

const limitSyntax = "want <rate>/<unit>[:<burst>] with unit s, m or h, such as 10/s, 600/m or 10/s:20"

// ParseLimit reads a limit written as "<rate>/<unit>[:<burst>]", the form
// of the --submit-rate and --poll-rate flags: "10/s" is PerSecond(10),
// "600/m" is PerMinute(600), "10/s:20" is 10 a second with a burst of 20.
// Units are s, m and h; "/h" takes a burst of one minute's share.
func ParseLimit(s string) (Limit, error) {
	spec := strings.TrimSpace(s)
	rateStr, rest, ok := strings.Cut(spec, "/")
	if !ok {
		return Limit{}, fmt.Errorf("rate limit %q: no \"/\": %s", s, limitSyntax)
	}
	unit, burstStr, hasBurst := strings.Cut(rest, ":")
	n, err := strconv.Atoi(rateStr)
	if err != nil || n <= 0 {
		return Limit{}, fmt.Errorf("rate limit %q: rate %q is not a positive integer: %s", s, rateStr, limitSyntax)
	}
	var l Limit
	switch unit {
	case "s":
		l = PerSecond(n)
	case "m":
		l = PerMinute(n)
	case "h":
		l = Limit{Rate: n, Period: time.Hour, Burst: max(1, (n+59)/60)}
	default:
		return Limit{}, fmt.Errorf("rate limit %q: unknown unit %q: %s", s, unit, limitSyntax)
	}
	if hasBurst {
		b, err := strconv.Atoi(burstStr)
		if err != nil || b <= 0 {
			return Limit{}, fmt.Errorf("rate limit %q: burst %q is not a positive integer: %s", s, burstStr, limitSyntax)
		}
		l.Burst = b
	}
	return l, nil
}
