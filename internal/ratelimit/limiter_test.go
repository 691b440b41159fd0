package ratelimit

import (
	"context"
	"errors"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

var testKey = Key{Region: "cn-east-3", Project: "0123456789abcdef", API: "UpdateKeypair"}

// newLimiter returns a limiter on c that limits testKey's API to lim.
func newLimiter(t testing.TB, c redis.UniversalClient, lim Limit, opts Options) *Limiter {
	t.Helper()
	opts.Limits = map[string]Limit{testKey.API: lim}
	l, err := New(c, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return l
}

// callCounter counts the commands a client sends.
type callCounter struct{ n atomic.Int64 }

func (c *callCounter) DialHook(next redis.DialHook) redis.DialHook { return next }
func (c *callCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}
func (c *callCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { c.Close() })
	tests := []struct {
		opts    Options
		wantErr string
	}{
		{Options{Limits: map[string]Limit{"ListJobs": {Rate: 0, Period: time.Second, Burst: 1}}}, `API "ListJobs": rate 0`},
		{Options{Beta: 1.5}, "Beta 1.5"},
		{Options{MinRate: -0.1}, "MinRate -0.1"},
		{Options{Margin: 1.2}, "Margin 1.2"},
		{Options{ProbeGain: -1}, "ProbeGain -1"},
		{Options{MaxWait: -time.Second}, "MaxWait -1s"},
		{Options{Hold: -time.Second}, "Hold -1s"},
		{Options{Isolation: -time.Second}, "Isolation -1s"},
		{Options{Hold: time.Second, Recovery: 2 * time.Second}, "Hold 1s shorter than Recovery 2s"},
	}
	for _, tt := range tests {
		if _, err := New(c, tt.opts); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("New(%+v) = %v; want an error containing %q", tt.opts, err, tt.wantErr)
		}
	}
	if _, err := New(nil, Options{}); err == nil {
		t.Error("New(nil client) succeeded")
	}
}

func TestBadKey(t *testing.T) {
	r := testredis.Mini(t)
	l := newLimiter(t, r.Client(t), PerSecond(10), Options{})
	tests := []struct {
		k       Key
		wantErr string
	}{
		{Key{Project: "p", API: testKey.API}, "empty region"},
		{Key{Region: "r", Project: "p"}, "empty API"},
		{Key{Region: "r{x}", Project: "p", API: testKey.API}, `region "r{x}"`},
		{Key{Region: "r", Project: "p:q", API: testKey.API}, `project "p:q"`},
	}
	for _, tt := range tests {
		if err := l.Wait(context.Background(), tt.k); err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Wait(%+v) = %v; want an error containing %q", tt.k, err, tt.wantErr)
		}
	}
}

func TestUnlimitedAPI(t *testing.T) {
	r := testredis.Mini(t)
	c := r.Client(t)
	var calls callCounter
	c.AddHook(&calls)
	l := newLimiter(t, c, PerSecond(1), Options{})
	k := Key{Region: "r", Project: "p", API: "ShowJob"}
	for range 100 {
		if err := l.Wait(context.Background(), k); err != nil {
			t.Fatalf("Wait(unlimited): %v", err)
		}
	}
	if err := l.Throttled(context.Background(), k, time.Second); err != nil {
		t.Fatalf("Throttled(unlimited): %v", err)
	}
	if got, err := l.CurrentRate(context.Background(), k); err != nil || !math.IsInf(got, 1) {
		t.Fatalf("CurrentRate(unlimited) = %v, %v; want +Inf", got, err)
	}
	if n := calls.n.Load(); n != 0 {
		t.Fatalf("an unlimited API made %d Redis calls; want 0", n)
	}
}

// grants is what a set of clients saw: the number of grants, and the
// earliest start and latest end of a granted call on the machine's wall
// clock, which Redis (local, or miniredis in this process) shares.
type grants struct {
	N           int
	First, Last int64 // unix nanoseconds
}

func (g *grants) add(o grants) {
	if o.N == 0 {
		return
	}
	if g.N == 0 || o.First < g.First {
		g.First = o.First
	}
	if g.N == 0 || o.Last > g.Last {
		g.Last = o.Last
	}
	g.N += o.N
}

// hammer calls Wait from n goroutines until stop, as tasks would; a delay
// is slept as asynq would before handing the task back.
func hammer(t testing.TB, l *Limiter, n int, start, stop time.Time) grants {
	time.Sleep(time.Until(start))
	var mu sync.Mutex
	var total grants
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			var g grants
			for time.Now().Before(stop) {
				before := time.Now().UnixNano()
				err := l.Wait(context.Background(), testKey)
				if ok, d := IsDelay(err); ok {
					time.Sleep(d)
					continue
				}
				if err != nil {
					t.Errorf("Wait: %v", err)
					return
				}
				g.add(grants{N: 1, First: before, Last: time.Now().UnixNano()})
			}
			mu.Lock()
			total.add(g)
			mu.Unlock()
		})
	}
	wg.Wait()
	return total
}

// Fleet-rate tests: rate and window, chosen so that the test takes a few
// seconds and the count is large enough for a 2 % bound to mean something.
const (
	fleetRate   = 50
	fleetBurst  = 25
	fleetWindow = 5 * time.Second
)

// checkFleetRate asserts that g, all grants of one key, kept to the limit
// and used it.
//
// The upper bound is exact: GCRA grants at most burst + rate·S in any span
// S of Redis time, and every grant happened on Redis between the earliest
// start and the latest end of a granted call, so S is at most that span
// however loaded the machine is.
//
// The lower bound, 98 % of rate·S, is robust because the clients always
// have a call waiting: a slot is lost only if every client (and, with
// miniredis, the server, which shares the test process) is descheduled at
// once, and GCRA gives back up to a burst (here 500 ms) of missed slots
// after such a stall. With the 2 % (100 ms over 5 s) on top, the test fails
// on a real shortfall of the limiter, not on a slow machine: a run under
// -race at load average 8 once lost 300 ms to a stall, which a burst of
// 200 ms could not make up.
func checkFleetRate(t *testing.T, g grants) {
	t.Helper()
	span := time.Duration(g.Last - g.First)
	upper := fleetBurst + fleetRate*span.Seconds()
	lower := 0.98 * fleetRate * span.Seconds()
	t.Logf("%d grants in %s: %.2f/s after the burst (limit %d/s, burst %d); bounds [%.1f, %.1f]",
		g.N, span, float64(g.N-fleetBurst)/span.Seconds(), fleetRate, fleetBurst, lower, upper)
	if span < fleetWindow/2 {
		t.Fatalf("grants spanned %s of a %s window", span, fleetWindow)
	}
	if float64(g.N) > upper+1e-9 {
		t.Errorf("%d grants in %s: more than burst + rate·span = %.1f", g.N, span, upper)
	}
	if float64(g.N) < lower {
		t.Errorf("%d grants in %s: fewer than 98%% of rate·span = %.1f", g.N, span, lower)
	}
}

func TestFleetRateGoroutines(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		const limiters, goroutines = 4, 3
		lim := Limit{Rate: fleetRate, Period: time.Second, Burst: fleetBurst}
		start := time.Now().Add(100 * time.Millisecond)
		stop := start.Add(fleetWindow)
		var mu sync.Mutex
		var total grants
		var wg sync.WaitGroup
		for range limiters {
			l := newLimiter(t, r.Client(t), lim, Options{})
			wg.Go(func() {
				g := hammer(t, l, goroutines, start, stop)
				mu.Lock()
				total.add(g)
				mu.Unlock()
			})
		}
		wg.Wait()
		checkFleetRate(t, total)
	})
}

func TestWaitDelayErrorOnLongWait(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		l := newLimiter(t, r.Client(t), PerMinute(1), Options{MaxWait: time.Second})
		ctx := context.Background()
		if err := l.Wait(ctx, testKey); err != nil {
			t.Fatalf("first Wait: %v", err)
		}
		err := l.Wait(ctx, testKey)
		var de *DelayError
		if !errors.As(err, &de) {
			t.Fatalf("second Wait = %v; want a *DelayError", err)
		}
		if de.RetryIn < 50*time.Second || de.RetryIn > 90*time.Second {
			t.Fatalf("RetryIn = %s; want about a minute (plus jitter)", de.RetryIn)
		}
		if ok, d := IsDelay(err); !ok || d != de.RetryIn {
			t.Fatalf("IsDelay = %v, %s; want true, %s", ok, d, de.RetryIn)
		}
	})
}

func TestWaitDelayErrorBeforeDeadline(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		l := newLimiter(t, r.Client(t), PerMinute(1), Options{MaxWait: time.Hour})
		if err := l.Wait(context.Background(), testKey); err != nil {
			t.Fatalf("first Wait: %v", err)
		}
		// The handler's deadline comes before the grant: put the task back
		// rather than let the deadline fail it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if ok, _ := IsDelay(l.Wait(ctx, testKey)); !ok {
			t.Fatal("Wait with a deadline before the grant did not return a *DelayError")
		}
	})
}

func TestWaitCancel(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		l := newLimiter(t, r.Client(t), PerMinute(1), Options{MaxWait: time.Hour})
		if err := l.Wait(context.Background(), testKey); err != nil {
			t.Fatalf("first Wait: %v", err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- l.Wait(ctx, testKey) }()
		time.Sleep(50 * time.Millisecond)
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Wait after cancel = %v; want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Wait did not return after its context was cancelled")
		}
	})
}

func TestCooldownIsShared(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		a := newLimiter(t, r.Client(t), PerSecond(100), Options{})
		b := newLimiter(t, r.Client(t), PerSecond(100), Options{MaxWait: time.Second})
		if err := a.Throttled(ctx, testKey, 5*time.Second); err != nil {
			t.Fatalf("Throttled: %v", err)
		}
		ok, d := IsDelay(b.Wait(ctx, testKey))
		if !ok || d < 3*time.Second || d > 8*time.Second {
			t.Fatalf("another process's Wait during a 5s Retry-After = delay %v, %s; want a delay of about 5s", ok, d)
		}
	})
}

func TestNoBurstAfterCooldown(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		lim := Limit{Rate: 1, Period: time.Second, Burst: 5}
		l := newLimiter(t, r.Client(t), lim, Options{MaxWait: 100 * time.Millisecond})
		if err := l.Throttled(ctx, testKey, 200*time.Millisecond); err != nil {
			t.Fatalf("Throttled: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := l.Wait(ctx, testKey); err != nil {
			t.Fatalf("first Wait after the cooldown: %v", err)
		}
		// An isolated 429 keeps the rate, but without the moved arrival time
		// the bucket would still hold its burst of 5.
		if ok, _ := IsDelay(l.Wait(ctx, testKey)); !ok {
			t.Fatal("second Wait right after the cooldown was granted; want calls paced at the lowered rate")
		}
	})
}

func TestRedisDownFailsClosedWithGrowingBackoff(t *testing.T) {
	m := miniredis.RunT(t)
	addr := m.Addr()
	m.Close()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialerRetries: 1, DialTimeout: time.Second})
	t.Cleanup(func() { c.Close() })
	var calls callCounter
	c.AddHook(&calls)
	now := time.Now()
	var o countingObserver
	l := newLimiter(t, c, PerSecond(100), Options{
		RedisBackoff:    500 * time.Millisecond,
		RedisBackoffMax: 4 * time.Second,
		Now:             func() time.Time { return now },
		Observer:        &o,
	})
	ctx := context.Background()
	// Equal jitter: failure n waits between half and all of min(500ms·2^(n-1), 4s).
	for n, max := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		err := l.Wait(ctx, testKey)
		var de *DelayError
		if !errors.As(err, &de) || de.Err == nil || !strings.Contains(err.Error(), "redis failed") {
			t.Fatalf("failure %d: Wait = %v; want a *DelayError explaining Redis is unavailable", n+1, err)
		}
		if de.RetryIn < max/2 || de.RetryIn > max {
			t.Fatalf("failure %d: RetryIn = %s; want in [%s, %s]", n+1, de.RetryIn, max/2, max)
		}
		if got := calls.n.Load(); got != int64(n+1) {
			t.Fatalf("after failure %d: %d Redis calls; want %d", n+1, got, n+1)
		}
		// While backing off, Wait answers without touching Redis.
		for range 1000 {
			if ok, d := IsDelay(l.Wait(ctx, testKey)); !ok || d > de.RetryIn*3/2 {
				t.Fatalf("Wait during the backoff = delay %v, %s; want a delay", ok, d)
			}
		}
		if got := calls.n.Load(); got != int64(n+1) {
			t.Fatalf("during backoff %d: %d Redis calls; want %d (no busy loop)", n+1, got, n+1)
		}
		now = now.Add(de.RetryIn)
	}
	if got := o.redis; got != 5 {
		t.Fatalf("Observer.RedisError called %d times; want 5", got)
	}
}

func TestRedisBackAfterOutage(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1, DialerRetries: 1})
	t.Cleanup(func() { c.Close() })
	now := time.Now()
	l := newLimiter(t, c, PerSecond(100), Options{Now: func() time.Time { return now }})
	ctx := context.Background()
	m.Close()
	if ok, _ := IsDelay(l.Wait(ctx, testKey)); !ok {
		t.Fatal("Wait with Redis down did not return a *DelayError")
	}
	if err := m.Restart(); err != nil {
		t.Fatalf("restart miniredis: %v", err)
	}
	if ok, _ := IsDelay(l.Wait(ctx, testKey)); !ok {
		t.Fatal("Wait within the backoff did not return a *DelayError")
	}
	now = now.Add(time.Minute)
	if err := l.Wait(ctx, testKey); err != nil {
		t.Fatalf("Wait after Redis came back: %v", err)
	}
}

// countingObserver counts the events of a limiter.
type countingObserver struct {
	mu                        sync.Mutex
	granted, throttled, redis int
	rates                     []float64
}

func (o *countingObserver) Granted(Key, time.Duration) { o.mu.Lock(); o.granted++; o.mu.Unlock() }
func (o *countingObserver) Throttled(Key)              { o.mu.Lock(); o.throttled++; o.mu.Unlock() }
func (o *countingObserver) RedisError(Key, error)      { o.mu.Lock(); o.redis++; o.mu.Unlock() }
func (o *countingObserver) RateChanged(_ Key, r float64) {
	o.mu.Lock()
	o.rates = append(o.rates, r)
	o.mu.Unlock()
}

func TestObserver(t *testing.T) {
	r := testredis.Mini(t)
	var o countingObserver
	l := newLimiter(t, r.Client(t), PerSecond(100), Options{Observer: &o, Hold: time.Hour})
	ctx := context.Background()
	for range 3 {
		if err := l.Wait(ctx, testKey); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
	if err := l.ThrottledQuota(ctx, testKey, time.Millisecond, 50); err != nil {
		t.Fatalf("ThrottledQuota: %v", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.granted != 3 || o.throttled != 1 || o.redis != 0 || !slices.Equal(o.rates, []float64{100, 47.5}) {
		t.Fatalf("observed granted %d, throttled %d, redis errors %d, rates %v; want 3, 1, 0, [100 47.5]", o.granted, o.throttled, o.redis, o.rates)
	}
}
