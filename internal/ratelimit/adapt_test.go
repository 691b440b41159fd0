package ratelimit

import (
	"context"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// wantRate asserts k's shared rate, give or take 0.05 (in the tests on a
// real clock the rate creeps up by a few thousandths a second).
func wantRate(t *testing.T, l *Limiter, want float64, what string) {
	t.Helper()
	got, err := l.CurrentRate(context.Background(), testKey)
	if err != nil {
		t.Fatalf("%s: CurrentRate: %v", what, err)
	}
	if math.Abs(got-want) > 0.05 {
		t.Fatalf("%s: rate %v; want %v", what, got, want)
	}
}

// throttle reports a 429 naming quota (0: none).
func throttle(t *testing.T, l *Limiter, quota float64) {
	t.Helper()
	if err := l.ThrottledQuota(context.Background(), testKey, 0, quota); err != nil {
		t.Fatalf("ThrottledQuota(%v): %v", quota, err)
	}
}

// TestAdaptRules walks the rules of a 429 on miniredis and on Redis. The
// options make the rate flat between reports (recovery and hold of hours)
// and the episodes long enough (1 s) that concurrent reports fall into one
// however slow the machine; the test sleeps past the window between
// episodes.
func TestAdaptRules(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		const window = time.Second
		l := newLimiter(t, r.Client(t), PerSecond(100), Options{
			Cooldown: 10 * time.Millisecond, Window: window, Isolation: time.Hour,
			Recovery: time.Hour, Hold: 2 * time.Hour,
		})
		next := func() { time.Sleep(window + 100*time.Millisecond) }
		wantRate(t, l, 100, "before any 429")

		// The first 429 after a quiet spell is isolated: a pause, no cut;
		// a storm of reports of calls in flight with it is one episode.
		throttle(t, l, 0)
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if err := l.Throttled(context.Background(), testKey, 0); err != nil {
					t.Errorf("Throttled: %v", err)
				}
			})
		}
		wg.Wait()
		wantRate(t, l, 100, "after an isolated 429 and its storm")

		// 429s keep coming: cut by Beta, the estimate is the rate they came at.
		next()
		throttle(t, l, 0)
		wantRate(t, l, 70, "after 429s that keep coming")
		// Again, below the estimate: fast convergence, estimate 70·0.85.
		next()
		throttle(t, l, 0)
		wantRate(t, l, 49, "after a second cut")

		// A 429 naming a quota below the rate: straight to 95 % of it.
		next()
		throttle(t, l, 30)
		wantRate(t, l, 28.5, "after a 429 naming 30/s")
		// 429s keep coming under the named quota (someone else spends
		// part of it): a cut, the estimate 28.5·0.85, the rate 28.5·0.7.
		next()
		throttle(t, l, 30)
		wantRate(t, l, 19.95, "after 429s under the named quota")
	})
}

func TestAdaptFloor(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		const window = time.Second
		l := newLimiter(t, r.Client(t), PerSecond(100), Options{
			Beta: 0.5, MinRate: 0.3, Cooldown: 10 * time.Millisecond, Window: window,
			Isolation: time.Hour, Recovery: time.Hour, Hold: 2 * time.Hour,
		})
		for _, want := range []float64{100, 50, 30, 30} {
			throttle(t, l, 0)
			wantRate(t, l, want, "after a 429")
			time.Sleep(window + 100*time.Millisecond)
		}
		// A quota the gateway names is honoured below the floor.
		throttle(t, l, 10)
		wantRate(t, l, 9.5, "after a 429 naming 10/s")
	})
}

// TestAdaptCurve follows the rate over time on miniredis with its clock
// set by the test, so every point is exact.
func TestAdaptCurve(t *testing.T) {
	r := testredis.Mini(t)
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) { r.Mini.SetTime(t0.Add(d)) }
	l := newLimiter(t, r.Client(t), PerSecond(100), Options{})
	const s = time.Second

	// The quota drops to 40: cut to 38 at once, hold 7 s, then probe:
	// 38 + 0.05·40·p³ after 7 s + p, up to the configured 100.
	at(0)
	throttle(t, l, 40)
	for _, p := range []struct {
		d    time.Duration
		want float64
	}{{s, 38}, {5 * s, 38}, {7 * s, 38}, {8 * s, 40}, {9 * s, 54}, {10 * s, 92}, {11 * s, 100}, {time.Minute, 100}} {
		at(p.d)
		wantRate(t, l, p.want, "after a cut to a named quota of 40 at 0s, at "+p.d.String())
	}
	// The state lives as long as the rate differs from the configured one
	// (11 s here, cube root of 62/2 s after the hold), plus a second.
	k := l.redisKeys(testKey)[1]
	if ttl := r.Mini.TTL(k); ttl < 11*s || ttl > 12*s {
		t.Fatalf("TTL of %s = %s; want about 11.1 s", k, ttl)
	}

	// A probe that hits the quota again (rate 54 > 40) cuts back to 38 and
	// holds anew.
	at(9 * s)
	throttle(t, l, 40)
	at(15 * s)
	wantRate(t, l, 38, "6 s after the probe's 429")
	// An isolated 429 at the plateau, under the named quota: the pause
	// only, the rate stays.
	at(15 * s)
	throttle(t, l, 40)
	wantRate(t, l, 38, "after an isolated 429 at the plateau")

	// Without a named quota, 429s that keep coming cut to 70 % and the rate
	// climbs back to 95 % of the rate they came at within 2 s, concavely.
	r2 := testredis.Mini(t)
	l2 := newLimiter(t, r2.Client(t), PerSecond(100), Options{})
	at2 := func(d time.Duration) { r2.Mini.SetTime(t0.Add(d)) }
	at2(0)
	throttle(t, l2, 0) // isolated
	wantRate(t, l2, 100, "after an isolated 429")
	at2(2 * s)
	throttle(t, l2, 0) // again within Isolation: a cut
	for _, p := range []struct {
		d    time.Duration
		want float64
	}{{2 * s, 70}, {3 * s, 95 - 25*0.125}, {4 * s, 95}, {9 * s, 95}, {10 * s, 100}} {
		at2(p.d)
		wantRate(t, l2, p.want, "after a cut at 2s, at "+p.d.String())
	}
}

// TestAdaptSharedByInstances checks that a 429 one limiter reports sets the
// rate every other limiter on the key grants at.
func TestAdaptSharedByInstances(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		a := newLimiter(t, r.Client(t), PerSecond(100), Options{Hold: time.Hour})
		b := newLimiter(t, r.Client(t), PerSecond(100), Options{Hold: time.Hour})
		throttle(t, a, 20)
		wantRate(t, b, 19, "another instance after a 429 naming 20/s")
	})
}

// Rate is the process's view of the shared rate, read without Redis: the
// configured rate at first, a cut as soon as this process reports or sees
// it.
func TestRateIsTheLastSeen(t *testing.T) {
	r := testredis.Mini(t)
	t0 := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	r.Mini.SetTime(t0)
	c := r.Client(t)
	opts := Options{Isolation: time.Hour, Recovery: time.Hour, Hold: 2 * time.Hour}
	l := newLimiter(t, c, PerSecond(20), opts)
	other := newLimiter(t, c, PerSecond(20), opts)
	var calls callCounter
	c.AddHook(&calls)
	steps := []struct {
		what string
		do   func()
		want float64
	}{
		{"before any call: the configured rate", func() {}, 20},
		{"after a 429 naming 10/s", func() { throttle(t, l, 10) }, 9.5},
		{"another process's cut, not seen yet", func() {
			r.Mini.SetTime(t0.Add(time.Minute)) // a new episode
			if err := other.ThrottledQuota(context.Background(), testKey, 0, 4); err != nil {
				t.Fatal(err)
			}
		}, 9.5},
		{"seen with the next shared decision", func() { wantRate(t, l, 3.8, "after the other's cut") }, 3.8},
	}
	for _, st := range steps {
		st.do()
		before := calls.n.Load()
		if got := l.Rate(testKey); math.Abs(got-st.want) > 0.01 {
			t.Fatalf("%s: Rate = %v, want %v", st.what, got, st.want)
		}
		if n := calls.n.Load() - before; n != 0 {
			t.Fatalf("%s: Rate made %d Redis calls, want 0", st.what, n)
		}
	}
	if got := l.Rate(Key{Region: "r", Project: "p", API: "ShowJob"}); !math.IsInf(got, 1) {
		t.Fatalf("Rate(unlimited) = %v, want +Inf", got)
	}
	if got := l.Rate(Key{API: testKey.API}); got != 0 {
		t.Fatalf("Rate(invalid key) = %v, want 0", got)
	}
}
