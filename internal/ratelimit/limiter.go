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
	Region  string
	Project string
	API     string // such as "UpdateKeypair" or "ListJobs"
}

func (k Key) String() string { return k.Region + "/" + k.Project + "/" + k.API }

func (k Key) validate() error {
	for _, f := range []struct{ name, v string }{{"region", k.Region}, {"project", k.Project}, {"API", k.API}} {
		if f.v == "" {
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
	// Beta multiplies the shared rate on a 429; default 0.7 (as AWS's
	// adaptive retry mode).
	Beta float64
	// MinRate is the floor of the shared rate, as a fraction of the
	// configured rate; default 0.1.
	MinRate float64
	// RecoveryStep is the fraction of the configured rate given back for
	// every QuietPeriod without a 429; default 0.1.
	RecoveryStep float64
	// QuietPeriod is the time without a 429 after which the rate recovers
	// by one step; default 10s.
	QuietPeriod time.Duration
	// Cooldown is how long nobody calls an API after a 429 without a
	// Retry-After; a random extra of up to half of it is added so that
	// pods do not resume in step. Default 2s. At most one decrease of the
	// rate happens per cooldown.
	Cooldown time.Duration
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
		def(&opts.RecoveryStep, 0.1, "RecoveryStep", 1),
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
		defDur(&opts.QuietPeriod, 10*time.Second, "QuietPeriod"),
		defDur(&opts.Cooldown, 2*time.Second, "Cooldown"),
		defDur(&opts.MaxWait, 2*time.Second, "MaxWait"),
		defDur(&opts.RedisBackoff, 500*time.Millisecond, "RedisBackoff"),
		defDur(&opts.RedisBackoffMax, 30*time.Second, "RedisBackoffMax"),
	} {
		if f != nil {
			return nil, f
		}
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
	return []string{tag + ":gcra", tag + ":aimd"}
}

// args returns the preamble's arguments for a limit.
func (l *Limiter) args(lim Limit, extra ...any) []any {
	r := lim.perSecond()
	return append([]any{
		strconv.FormatFloat(r, 'f', -1, 64),
		lim.Burst,
		strconv.FormatFloat(r*l.opts.MinRate, 'f', -1, 64),
		strconv.FormatFloat(r*l.opts.RecoveryStep, 'f', -1, 64),
		strconv.FormatFloat(l.opts.QuietPeriod.Seconds(), 'f', -1, 64),
	}, extra...)
}

// lookup returns the limit and local state of k, or ok false when k's API
// is not limited.
func (l *Limiter) lookup(k Key) (*local, bool, error) {
	if err := k.validate(); err != nil {
		return nil, false, err
	}
	lim, ok := l.opts.Limits[k.API]
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

// Throttled reports a 429 for k. It lowers the shared rate by Beta (to no
// less than MinRate, and at most once per cooldown, so a storm of 429s
// from calls already in flight does not collapse it) and stops every
// process from calling k's API for retryAfter, or for Cooldown plus jitter
// when retryAfter is not positive. When Redis is unreachable this process
// still honours the cooldown, and the error is returned.
func (l *Limiter) Throttled(ctx context.Context, k Key, retryAfter time.Duration) error {
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
	cool := retryAfter
	if cool <= 0 {
		cool = l.opts.Cooldown + rand.N(l.opts.Cooldown/2+1)
	}
	st.hold(l.opts.Now().Add(cool))
	window := max(cool, l.opts.Cooldown)
	_, left, shared, err := l.run(ctx, throttleScript, k, l.args(st.limit,
		strconv.FormatFloat(cool.Seconds(), 'f', -1, 64),
		strconv.FormatFloat(l.opts.Beta, 'f', -1, 64),
		strconv.FormatFloat(window.Seconds(), 'f', -1, 64)))
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

// run runs one of the scripts, whose replies end with a wait (s) and the
// shared rate, and keeps track of Redis failures: a failed call starts or
// extends the backoff and comes back as a *DelayError.
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
// when it is new to this process.
func (l *Limiter) sawRate(k Key, st *local, shared float64) {
	if shared <= 0 {
		return
	}
	st.mu.Lock()
	changed := shared != st.rate
	if changed {
		st.rate = shared
		now := l.opts.Now()
		st.bucket.SetLimitAt(now, rate.Limit(shared))
		st.bucket.SetBurstAt(now, max(1, int(float64(st.limit.Burst)*shared/st.limit.perSecond())))
	}
	st.mu.Unlock()
	if o := l.opts.Observer; changed && o != nil {
		o.RateChanged(k, shared)
	}
}

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
