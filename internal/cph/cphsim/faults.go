package cphsim

import (
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// quotas holds one token bucket per API, as the API gateway throttles
// each API on its own: UpdateKeypair, ListJobs, and each read call at the
// read quota. The buckets take the simulator's clock, so throttling follows
// Options.Clock.
type quotas struct {
	burst int // Options.QuotaBurst

	mu      sync.Mutex // guards the map; rate.Limiter locks itself
	buckets map[API]*rate.Limiter
}

func newQuotas(o Options) *quotas {
	q := &quotas{burst: max(o.QuotaBurst, 0), buckets: map[API]*rate.Limiter{}}
	for _, api := range APIs() {
		q.buckets[api] = q.newLimiter(o.quota(api))
	}
	return q
}

// quota is the configured rate of api's bucket.
func (o Options) quota(api API) float64 {
	switch api {
	case APIUpdateKeypair:
		return o.UpdateKeypairQuota
	case APIListJobs:
		return o.ListJobsQuota
	}
	return o.ReadQuota
}

// newLimiter returns a full bucket of perSecond tokens a second (≤ 0:
// unlimited) holding Options.QuotaBurst tokens, or perSecond rounded up.
func (q *quotas) newLimiter(perSecond float64) *rate.Limiter {
	if !(perSecond > 0) || math.IsInf(perSecond, 1) {
		return rate.NewLimiter(rate.Inf, 1)
	}
	return rate.NewLimiter(rate.Limit(perSecond), q.burstOf(perSecond))
}

func (q *quotas) burstOf(perSecond float64) int {
	if q.burst > 0 {
		return q.burst
	}
	return max(int(math.Ceil(perSecond)), 1)
}

func (q *quotas) limiter(api API) *rate.Limiter {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.buckets[api]
}

// set changes api's rate, keeping the tokens already in a finite bucket. A
// bucket that becomes or stops being unlimited is replaced instead, because
// rate.Limiter computes NaN tokens when moving from an infinite rate.
func (q *quotas) set(api API, perSecond float64, now time.Time) {
	q.mu.Lock()
	defer q.mu.Unlock()
	lim := q.buckets[api]
	if lim.Limit() == rate.Inf || !(perSecond > 0) || math.IsInf(perSecond, 1) {
		q.buckets[api] = q.newLimiter(perSecond)
		return
	}
	lim.SetLimitAt(now, rate.Limit(perSecond))
	lim.SetBurstAt(now, q.burstOf(perSecond))
}

// allow takes a token for api at now. When none is left it reports how
// long until one is and the configured rate.
func (q *quotas) allow(api API, now time.Time) (wait time.Duration, limit rate.Limit, ok bool) {
	lim := q.limiter(api)
	if lim.AllowN(now, 1) {
		return 0, 0, true
	}
	limit = lim.Limit()
	missing := 1 - lim.TokensAt(now)
	return time.Duration(missing / float64(limit) * float64(time.Second)), limit, false
}

// SetQuota changes the rate of api's quota at run time (≤ 0: unlimited).
func (s *Sim) SetQuota(api API, perSecond float64) error {
	if !api.known() {
		return fmt.Errorf("set quota: unknown API %q", api)
	}
	if math.IsNaN(perSecond) {
		return fmt.Errorf("set quota of %s: rate is NaN", api)
	}
	s.quotas.set(api, perSecond, s.now())
	return nil
}

func (a API) known() bool {
	return slices.Contains(APIs(), a) || a.kps()
}

// throttled is the 429 the API gateway answers: a per-second limit below 1
// is shown per minute, as the gateway words it. It sets Retry-After on w
// when Options.RetryAfter asks for it.
func (s *Sim) throttled(w http.ResponseWriter, wait time.Duration, limit rate.Limit) *apiError {
	code := "APIGW.0308"
	if s.opts.LegacyThrottleCode {
		code = "APIG.0308"
	}
	per, n := "1 second", float64(limit)
	if n < 1 {
		per, n = "1 minute", n*60
	}
	if s.opts.RetryAfter {
		w.Header().Set("Retry-After", strconv.Itoa(max(int(math.Ceil(wait.Seconds())), 1)))
	}
	if s.opts.HideQuota {
		return errorf(http.StatusTooManyRequests, code, "The throttling threshold has been reached: policy user over ratelimit")
	}
	return errorf(http.StatusTooManyRequests, code,
		"The throttling threshold has been reached: policy user over ratelimit,limit:%s,time:%s",
		strconv.FormatFloat(n, 'f', -1, 64), per)
}

// fault is what happens to one request instead of, or on top of, its answer.
type fault struct {
	drop   bool // close the connection without answering
	status int  // answer this 5xx instead
	slow   bool // delay the answer by Options.SlowDelay
}

// drawFaults draws at most one of drop and 5xx (drop first), and
// independently whether the answer is slow.
func (s *Sim) drawFaults(api API) fault {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f fault
	switch {
	case s.rng.Float64() < s.opts.DropRate:
		f.drop = true
		s.stats.dropped[api]++
	case s.rng.Float64() < s.opts.Error5xxRate:
		f.status = []int{http.StatusInternalServerError, http.StatusServiceUnavailable, http.StatusGatewayTimeout}[s.rng.IntN(3)]
		s.stats.injected5xx[api]++
	}
	if !f.drop && s.rng.Float64() < s.opts.SlowRate {
		f.slow = true
		s.stats.slowed[api]++
	}
	return f
}

// injected is the body of an injected 5xx. CPH documents no 5xx codes;
// these follow the gateway's APIGW.0201 for backend trouble.
func injected(status int) *apiError {
	switch status {
	case http.StatusServiceUnavailable:
		return errorf(status, "APIGW.0201", "Backend unavailable")
	case http.StatusGatewayTimeout:
		return errorf(status, "APIGW.0201", "Backend timeout")
	}
	return errorf(status, "CPS.9999", "Internal server error.")
}
