package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// Key names one quota: an API of a project in a region.
type Key struct {
	Region string
	// Project is the project whose quota it is; empty: the region's, shared
	// by every project one set of credentials signs for (the API gateway
	// throttles a user per API).
	Project string
	API     string // such as "UpdateKeypair" or "ListJobs"
}

func (k Key) String() string { return k.Region + "/" + k.Project + "/" + k.API }

func (k Key) validate() error {
	for _, f := range []struct{ name, v string }{{"region", k.Region}, {"project", k.Project}, {"API", k.API}} {
		if f.v == "" && f.name != "project" {
			return fmt.Errorf("rate limit key %s: empty %s", k, f.name)
		}
		if strings.ContainsAny(f.v, "{}: \t\r\n") {
			return fmt.Errorf("rate limit key %s: %s %q contains one of {}: or a space", k, f.name, f.v)
		}
	}
	return nil
}

// Observer receives the limiter's events, for metrics. Its methods are
// called synchronously and must be quick and safe for concurrent use.
type Observer interface {
	// Granted is called when Wait grants a call, with the time it waited.
	Granted(k Key, waited time.Duration)
	// Throttled is called for every 429 reported with Limiter.Throttled.
	Throttled(k Key)
	// RateChanged is called with the shared rate when this process first
	// sees it for k and whenever it changes.
	RateChanged(k Key, perSecond float64)
	// RedisError is called when a Redis call of the limiter fails.
	RedisError(k Key, err error)
}

// Options configure a Limiter. Zero values take the documented defaults;
// every process sharing a key must use the same options.
type Options struct {
	// Prefix starts every Redis key; default "cph-rekey:rl:".
	Prefix string
	// Limits is the configured (maximum) rate per API name. An API without
	// a limit is not limited: Wait returns at once and Throttled only
	// notifies the Observer.
	Limits map[string]Limit
	// RegionLimits override Limits in a region: region → API → rate.
	RegionLimits map[string]map[string]Limit
	// Beta multiplies the shared rate on a cut that no quota named in the
	// 429 explains (429s that keep coming); default 0.7 (as AWS's adaptive
	// retry mode).
	Beta float64
	// MinRate is the floor of the shared rate, as a fraction of the
	// configured rate; default 0.1. A quota named by a 429 may take the
	// rate below it.
	MinRate float64
	// Margin is the fraction of the estimated quota the rate returns to
	// after a cut: "just under" the quota a 429 named, or the rate at which
	// the last 429s came; default 0.95.
	Margin float64
	// Recovery is how long the rate takes to climb from a cut back to
	// Margin × the estimate (concave, as CUBIC's return to W_max); default 2s.
	Recovery time.Duration
	// Hold is the time from a cut during which the rate stays at Margin ×
	// the estimate; after it the rate probes above it, convexly, until the
	// configured rate or the next 429. Default 7s: a quota that comes back
	// is found within Hold plus about 3s.
	Hold time.Duration
	// ProbeGain sets the probe's speed: after Hold + p the rate is
	// Margin·est + ProbeGain·est·p³; default 0.05 (+5 % of the estimate
	// after 1 s, +40 % after 2 s, +135 % after 3 s).
	ProbeGain float64
	// Isolation is how long after the previous 429 a 429 counts as
	// isolated: at no more than the estimated quota (or a quota named in
	// it) it only pauses, the rate is kept. Default 5s.
	Isolation time.Duration
	// Cooldown is how long nobody calls an API after a 429 without a
	// Retry-After; a random extra of up to half of it is added. Default
	// 250ms: the rate, not the pause, is what stops 429s, and a short pause
	// lets the API's bucket refill a little.
	Cooldown time.Duration
	// Window is how long after an episode's first 429 further 429s (calls
	// that were in flight) count as the same episode: they extend the pause
	// but decide nothing. At least the pause; default 1s.
	Window time.Duration
	// MaxWait is the longest wait done inside Wait; a longer one returns a
	// *DelayError. Default 2s.
	MaxWait time.Duration
	// RedisBackoff is the delay after the first failed Redis call; it
	// doubles with each consecutive failure up to RedisBackoffMax, drawn
	// with equal jitter. Defaults 500ms and 30s.
	RedisBackoff, RedisBackoffMax time.Duration
	// Observer receives events for metrics; nil means none.
	Observer Observer
	// Now reads the clock for local decisions (local pacing, the Redis
	// backoff); default time.Now. Shared decisions use Redis's clock.
	Now func() time.Time
}

// Limiter enforces fleet-wide rates over Redis. It is safe for concurrent
// use; processes sharing a Redis and a Prefix share the quotas.
type Limiter struct {
	rdb  redis.Scripter
	opts Options

	mu     sync.Mutex
	keys   map[Key]*local
	fails  int       // consecutive failed Redis calls
	downTo time.Time // no Redis call before this time
	err    error     // the last Redis error
}

// local is a process's view of one key: a token bucket at the shared rate
// that spaces this process's calls to Redis, and the earliest time Redis
// can grant anything, so that waiting goroutines sleep instead of asking.
type local struct {
	limit     Limit
	bucket    *rate.Limiter
	mu        sync.Mutex
	rate      float64 // the shared rate last seen; 0 before the first reply
	reported  float64 // the shared rate last reported to the Observer
	notBefore time.Time
}

// New returns a limiter on rdb. It checks the options but not the
// connection: a Redis that is down shows as *DelayError from Wait.
func New(rdb redis.UniversalClient, opts Options) (*Limiter, error) {
	if rdb == nil {
		return nil, errors.New("ratelimit: nil Redis client")
	}
	for api, l := range opts.Limits {
		if err := l.Validate(); err != nil {
			return nil, fmt.Errorf("ratelimit: limit of API %q: %w", api, err)
		}
	}
	for region, limits := range opts.RegionLimits {
		for api, l := range limits {
			if err := l.Validate(); err != nil {
				return nil, fmt.Errorf("ratelimit: limit of API %q in region %s: %w", api, region, err)
			}
		}
	}
	def := func(v *float64, d float64, name string, hi float64) error {
		if *v == 0 {
			*v = d
		}
		if *v <= 0 || *v > hi {
			return fmt.Errorf("ratelimit: %s %v: want a value in (0, %v]", name, *v, hi)
		}
		return nil
	}
	for _, f := range []error{
		def(&opts.Beta, 0.7, "Beta", 1),
		def(&opts.MinRate, 0.1, "MinRate", 1),
		def(&opts.Margin, 0.95, "Margin", 1),
		def(&opts.ProbeGain, 0.05, "ProbeGain", 100),
	} {
		if f != nil {
			return nil, f
		}
	}
	defDur := func(v *time.Duration, d time.Duration, name string) error {
		if *v == 0 {
			*v = d
		}
		if *v < 0 {
			return fmt.Errorf("ratelimit: %s %s: must not be negative", name, *v)
		}
		return nil
	}
	for _, f := range []error{
		defDur(&opts.Recovery, 2*time.Second, "Recovery"),
		defDur(&opts.Hold, 7*time.Second, "Hold"),
		defDur(&opts.Isolation, 5*time.Second, "Isolation"),
		defDur(&opts.Cooldown, 250*time.Millisecond, "Cooldown"),
		defDur(&opts.Window, time.Second, "Window"),
		defDur(&opts.MaxWait, 2*time.Second, "MaxWait"),
		defDur(&opts.RedisBackoff, 500*time.Millisecond, "RedisBackoff"),
		defDur(&opts.RedisBackoffMax, 30*time.Second, "RedisBackoffMax"),
	} {
		if f != nil {
			return nil, f
		}
	}
	if opts.Hold < opts.Recovery {
		return nil, fmt.Errorf("ratelimit: Hold %s shorter than Recovery %s", opts.Hold, opts.Recovery)
	}
	if opts.Prefix == "" {
		opts.Prefix = "cph-rekey:rl:"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Limiter{rdb: rdb, opts: opts, keys: map[Key]*local{}}, nil
}

// redisKeys returns the TAT and state keys of k. The hash tag keeps both
// in one Cluster slot, as the scripts need.
func (l *Limiter) redisKeys(k Key) []string {
	tag := l.opts.Prefix + "{" + k.Region + ":" + k.Project + ":" + k.API + "}"
	return []string{tag + ":gcra", tag + ":adapt"}
}

// args returns the preamble's arguments for a limit.
func (l *Limiter) args(lim Limit, extra ...any) []any {
	r := lim.perSecond()
	return append([]any{
		num(r),
		lim.Burst,
		num(r * l.opts.MinRate),
		num(l.opts.Margin),
		num(l.opts.Recovery.Seconds()),
		num(l.opts.Hold.Seconds()),
		num(l.opts.ProbeGain),
	}, extra...)
}

// num formats a script argument.
func num(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// lookup returns the limit and local state of k, or ok false when k's API
// is not limited.
func (l *Limiter) lookup(k Key) (*local, bool, error) {
	if err := k.validate(); err != nil {
		return nil, false, err
	}
	lim, ok := l.opts.RegionLimits[k.Region][k.API]
	if !ok {
		lim, ok = l.opts.Limits[k.API]
	}
	if !ok {
		return nil, false, nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.keys[k]
	if st == nil {
		r := lim.perSecond()
		st = &local{limit: lim, bucket: rate.NewLimiter(rate.Limit(r), lim.Burst)}
		l.keys[k] = st
	}
	return st, true, nil
}

// Wait blocks until Redis grants a call for k, or returns a *DelayError
// when that would take longer than Options.MaxWait or the context's
// deadline (the caller puts its task back with that delay), or when Redis
// is unreachable. A cancelled ctx returns its error promptly.
func (l *Limiter) Wait(ctx context.Context, k Key) error {
	st, limited, err := l.lookup(k)
	if err != nil || !limited {
		return err
	}
	start := l.opts.Now()
	budget := l.opts.MaxWait
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, time.Until(dl))
	}
	if d, err := l.redisDown(start); d > 0 {
		return &DelayError{RetryIn: jitter(d), Err: fmt.Errorf("rate limit %s: %w", k, err)}
	}

	// One local token per Wait: it spaces this process's attempts at the
	// shared rate, so queued goroutines sleep here instead of asking Redis.
	res := st.bucket.ReserveN(start, 1)
	d := max(res.DelayFrom(start), st.until(start))
	if d > budget {
		res.CancelAt(start)
		return &DelayError{RetryIn: jitter(d)}
	}
	if err := sleep(ctx, d); err != nil {
		res.CancelAt(l.opts.Now())
		return fmt.Errorf("rate limit %s: %w", k, err)
	}
	for {
		granted, wait, shared, err := l.run(ctx, takeScript, k, l.args(st.limit))
		if err != nil {
			return err
		}
		l.sawRate(k, st, shared)
		now := l.opts.Now()
		waited := now.Sub(start)
		if granted {
			if o := l.opts.Observer; o != nil {
				o.Granted(k, waited)
			}
			return nil
		}
		st.hold(now.Add(wait))
		if waited+wait > budget {
			return &DelayError{RetryIn: jitter(wait)}
		}
		if err := sleep(ctx, wait); err != nil {
			return fmt.Errorf("rate limit %s: %w", k, err)
		}
	}
}

// Throttled reports a 429 for k whose message named no quota; it is
// ThrottledQuota with quota 0.
func (l *Limiter) Throttled(ctx context.Context, k Key, retryAfter time.Duration) error {
	return l.ThrottledQuota(ctx, k, retryAfter, 0)
}

// ThrottledQuota reports a 429 for k. retryAfter is the answer's
// Retry-After (0: none) and quota the quota its message named, in calls
// per second (0: none; see cph.QuotaPerSecond).
//
// Every process stops calling k's API for retryAfter, or for Cooldown plus
// jitter. The first 429 of an episode then decides, for the whole fleet,
// in the same script run:
//
//   - sent above the named quota: the rate drops to Margin × quota at once;
//   - isolated (Isolation since the last 429, at no more than the named or
//     estimated quota): the pause only, the rate is kept;
//   - otherwise the rate is cut by Beta and the rate at which the 429s came
//     becomes the estimate the rate returns to within Recovery.
//
// 429s within Window of the first (calls already in flight) only extend
// the pause, so a storm counts once. After Hold the rate probes above the
// estimate, back to the configured rate unless a 429 comes. When Redis is
// unreachable this process still honours the pause, and the error is
// returned.
func (l *Limiter) ThrottledQuota(ctx context.Context, k Key, retryAfter time.Duration, quota float64) error {
	st, limited, err := l.lookup(k)
	if err != nil {
		return err
	}
	if o := l.opts.Observer; o != nil {
		o.Throttled(k)
	}
	if !limited {
		return nil
	}
	if !(quota > 0) || math.IsInf(quota, 0) {
		quota = 0
	}
	cool := retryAfter
	if cool <= 0 {
		cool = l.opts.Cooldown + rand.N(l.opts.Cooldown/2+1)
	}
	st.hold(l.opts.Now().Add(cool))
	_, left, shared, err := l.run(ctx, throttleScript, k, l.args(st.limit,
		num(cool.Seconds()),
		num(l.opts.Beta),
		num(quota),
		num(l.opts.Isolation.Seconds()),
		num(l.opts.Window.Seconds())))
	if err != nil {
		return err
	}
	st.hold(l.opts.Now().Add(left))
	l.sawRate(k, st, shared)
	return nil
}

// CurrentRate returns the shared rate of k in calls per second: the
// configured rate, or less after 429s. An API without a limit has rate
// +Inf.
func (l *Limiter) CurrentRate(ctx context.Context, k Key) (float64, error) {
	st, limited, err := l.lookup(k)
	if err != nil {
		return 0, err
	}
	if !limited {
		return math.Inf(1), nil
	}
	_, _, shared, err := l.run(ctx, rateScript, k, l.args(st.limit))
	if err != nil {
		return 0, err
	}
	l.sawRate(k, st, shared)
	return shared, nil
}

// Rate returns the rate of k as this process last saw it, without asking
// Redis: the shared rate of its last grant or 429 report, or the
// configured rate before the first. Callers that size their concurrency
// from it (rate × latency) follow the adaptive cuts within a call. An API
// without a limit has rate +Inf; an invalid key, 0.
func (l *Limiter) Rate(k Key) float64 {
	st, limited, err := l.lookup(k)
	switch {
	case err != nil:
		return 0
	case !limited:
		return math.Inf(1)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.rate > 0 {
		return st.rate
	}
	return st.limit.perSecond()
}

// run runs one of the scripts, whose replies end with a wait (s) and the
// shared rate, and keeps track of Redis failures: a failed call starts or
// extends the backoff and comes back as a *DelayError. ok is a reply's
// leading 1 (a grant).
func (l *Limiter) run(ctx context.Context, s *redis.Script, k Key, args []any) (ok bool, wait time.Duration, shared float64, err error) {
	v, err := s.Run(ctx, l.rdb, l.redisKeys(k), args...).Slice()
	if err == nil {
		ok, wait, shared, err = parseReply(v)
	}
	if err != nil {
		if ctx.Err() != nil {
			return false, 0, 0, fmt.Errorf("rate limit %s: %w", k, ctx.Err())
		}
		return false, 0, 0, l.redisFailed(k, err)
	}
	l.mu.Lock()
	l.fails = 0
	l.mu.Unlock()
	return ok, wait, shared, nil
}

// parseReply reads {[flag,] seconds, rate}.
func parseReply(v []any) (flag bool, wait time.Duration, shared float64, err error) {
	if len(v) == 3 {
		n, _ := v[0].(int64)
		flag = n == 1
		v = v[1:]
	}
	if len(v) != 2 {
		return false, 0, 0, fmt.Errorf("unexpected script reply %v", v)
	}
	ws, _ := v[0].(string)
	rs, _ := v[1].(string)
	w, err1 := strconv.ParseFloat(ws, 64)
	r, err2 := strconv.ParseFloat(rs, 64)
	if err := errors.Join(err1, err2); err != nil {
		return false, 0, 0, fmt.Errorf("unexpected script reply %v: %w", v, err)
	}
	return flag, time.Duration(w * float64(time.Second)), r, nil
}

// redisFailed counts a failed Redis call and returns the delay error for
// it. Calls that fail together (several goroutines, one outage) count
// once, so the backoff grows with time down, not with concurrency.
func (l *Limiter) redisFailed(k Key, err error) error {
	if o := l.opts.Observer; o != nil {
		o.RedisError(k, err)
	}
	now := l.opts.Now()
	l.mu.Lock()
	if !now.Before(l.downTo) {
		l.fails++
		d := l.opts.RedisBackoff
		for i := 1; i < l.fails && d < l.opts.RedisBackoffMax; i++ {
			d *= 2
		}
		d = min(d, l.opts.RedisBackoffMax)
		l.downTo = now.Add(d/2 + rand.N(d/2+1))
	}
	l.err = err
	d, n := l.downTo.Sub(now), l.fails
	l.mu.Unlock()
	return &DelayError{RetryIn: d, Err: fmt.Errorf("rate limit %s: redis failed (%d consecutive failures): %w", k, n, err)}
}

// redisDown returns how long Redis is still to be left alone, and why.
func (l *Limiter) redisDown(now time.Time) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d := l.downTo.Sub(now); d > 0 && l.fails > 0 {
		return d, fmt.Errorf("redis failed (%d consecutive failures), backing off: %w", l.fails, l.err)
	}
	return 0, nil
}

// sawRate follows the shared rate locally, and reports it to the Observer
// when it is new to this process or differs from the last reported one by
// reportStep or more (the rate moves continuously while it recovers or
// probes; the configured rate is always reported).
func (l *Limiter) sawRate(k Key, st *local, shared float64) {
	if shared <= 0 {
		return
	}
	st.mu.Lock()
	if shared != st.rate {
		st.rate = shared
		now := l.opts.Now()
		st.bucket.SetLimitAt(now, rate.Limit(shared))
		st.bucket.SetBurstAt(now, max(1, int(float64(st.limit.Burst)*shared/st.limit.perSecond())))
	}
	report := shared != st.reported &&
		(st.reported == 0 || math.Abs(shared-st.reported) >= reportStep*st.reported || shared == st.limit.perSecond())
	if report {
		st.reported = shared
	}
	st.mu.Unlock()
	if o := l.opts.Observer; report && o != nil {
		o.RateChanged(k, shared)
	}
}

// reportStep is the relative change of the shared rate that is reported
// to the Observer.
const reportStep = 0.05

// hold keeps this process from asking Redis for k before t.
func (st *local) hold(t time.Time) {
	st.mu.Lock()
	if t.After(st.notBefore) {
		st.notBefore = t
	}
	st.mu.Unlock()
}

// until returns how long this process must not ask Redis for k.
func (st *local) until(now time.Time) time.Duration {
	st.mu.Lock()
	defer st.mu.Unlock()
	return max(0, st.notBefore.Sub(now))
}

// jitter spreads tasks put back with the same delay over half of it more.
func jitter(d time.Duration) time.Duration { return d + rand.N(d/2+1) }

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
