package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"golang.org/x/time/rate"

	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
)

// Limiter kinds of --limiter.
const (
	limiterFleet = "fleet" // the shared Redis limiter (internal/ratelimit)
	limiterLocal = "local" // localLimiter: per process, for benchmark baselines
)

// localLimiter gives each process its own x/time/rate bucket per API at the
// configured rate, with no coordination between processes and no reaction
// to 429s: asynq's documented rate-limit pattern. It exists so the
// benchmark can measure cph-rekey against that pattern with the same
// worker; production uses the fleet limiter.
type localLimiter struct {
	buckets map[string]*rate.Limiter
	maxWait time.Duration // longer waits put the task back, as the fleet limiter's MaxWait
}

func newLocalLimiter(limits map[string]ratelimit.Limit, maxWait time.Duration) *localLimiter {
	l := &localLimiter{buckets: map[string]*rate.Limiter{}, maxWait: maxWait}
	for api, lim := range limits {
		l.buckets[api] = lim.Local()
	}
	return l
}

// Wait takes a token for api, sleeping for it when it comes within maxWait
// and the context's deadline, and otherwise returning a
// *ratelimit.DelayError so the task is put back without a failure. An API
// without a bucket is not limited.
func (l *localLimiter) Wait(ctx context.Context, api string) error {
	b, ok := l.buckets[api]
	if !ok {
		return nil
	}
	now := time.Now()
	budget := l.maxWait
	if dl, ok := ctx.Deadline(); ok {
		budget = min(budget, dl.Sub(now))
	}
	res := b.ReserveN(now, 1)
	d := res.DelayFrom(now)
	if d > budget {
		res.CancelAt(now)
		// Jitter spreads the tasks put back together, as the fleet limiter does.
		return &ratelimit.DelayError{RetryIn: d + rand.N(d/2+1)}
	}
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		res.Cancel()
		return fmt.Errorf("local rate limit %s: %w", api, ctx.Err())
	}
}

// Throttled does nothing: a local limiter does not learn from 429s, which
// is the behaviour the baselines measure.
func (l *localLimiter) Throttled(context.Context, string, time.Duration, float64) error { return nil }

// Rate is api's bucket's rate, the same in every process.
func (l *localLimiter) Rate(api string) float64 {
	b, ok := l.buckets[api]
	if !ok {
		return math.Inf(1)
	}
	return float64(b.Limit())
}
