package ratelimit

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// helperEnv marks a re-executed test binary as a worker process of
// TestFleetRateProcesses; its value is "addr db startNanos stopNanos goroutines".
const helperEnv = "CPH_REKEY_RATELIMIT_HELPER"

// adaptHelperEnv marks a re-executed test binary as a worker process of
// TestFleetAdaptsProcesses; its value is "addr db startNanos stopNanos
// goroutines throttleAtNanos quota", throttleAtNanos 0 for a process that
// reports no 429.
const adaptHelperEnv = "CPH_REKEY_RATELIMIT_ADAPT_HELPER"

// TestHelperProcess is one worker process of TestFleetRateProcesses. It
// does nothing unless re-executed with helperEnv set.
func TestHelperProcess(t *testing.T) {
	spec := os.Getenv(helperEnv)
	if spec == "" {
		t.Skip("runs only as a helper process of TestFleetRateProcesses")
	}
	var addr string
	var db, goroutines int
	var start, stop int64
	if _, err := fmt.Sscan(spec, &addr, &db, &start, &stop, &goroutines); err != nil {
		t.Fatalf("%s=%q: %v", helperEnv, spec, err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	t.Cleanup(func() { c.Close() })
	l := newLimiter(t, c, Limit{Rate: fleetRate, Period: time.Second, Burst: fleetBurst}, Options{})
	g := hammer(t, l, goroutines, time.Unix(0, start), time.Unix(0, stop))
	out, err := json.Marshal(g)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("grants %s\n", out)
}

func TestFleetRateProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and runs for seconds")
	}
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		const processes, goroutines = 3, 3
		// Processes take a while to start on a loaded machine: give them a
		// common start time well ahead.
		start := time.Now().Add(2 * time.Second)
		stop := start.Add(fleetWindow)
		var mu sync.Mutex
		var total grants
		var wg sync.WaitGroup
		for i := range processes {
			cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d %d %d", helperEnv, r.Addr, r.DB, start.UnixNano(), stop.UnixNano(), goroutines))
			wg.Go(func() {
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Errorf("helper process %d: %v\n%s", i, err, out)
					return
				}
				g, err := parseGrants(out)
				if err != nil {
					t.Errorf("helper process %d: %v\n%s", i, err, out)
					return
				}
				t.Logf("process %d: %d grants", i, g.N)
				mu.Lock()
				total.add(g)
				mu.Unlock()
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		checkFleetRate(t, total)
	})
}

// parseGrants finds the helper's "grants {json}" line in its output.
func parseGrants(out []byte) (grants, error) {
	for line := range strings.Lines(string(out)) {
		if js, ok := strings.CutPrefix(strings.TrimSpace(line), "grants "); ok {
			var g grants
			err := json.Unmarshal([]byte(js), &g)
			return g, err
		}
	}
	return grants{}, fmt.Errorf("no %q line in the output", "grants")
}

// Adaptive fleet test: the fleet rate and burst of the other tests; one
// process reports a 429 naming adaptQuota a second into the window.
const adaptQuota = 20

// TestAdaptHelperProcess is one worker process of TestFleetAdaptsProcesses.
// It prints every grant's start and end, the end of its 429 report if it
// made one, and the shared rate it sees at the end.
func TestAdaptHelperProcess(t *testing.T) {
	spec := os.Getenv(adaptHelperEnv)
	if spec == "" {
		t.Skip("runs only as a helper process of TestFleetAdaptsProcesses")
	}
	var addr string
	var db, goroutines int
	var start, stop, throttleAt int64
	var quota float64
	if _, err := fmt.Sscan(spec, &addr, &db, &start, &stop, &goroutines, &throttleAt, &quota); err != nil {
		t.Fatalf("%s=%q: %v", adaptHelperEnv, spec, err)
	}
	c := redis.NewClient(&redis.Options{Addr: addr, DB: db})
	t.Cleanup(func() { c.Close() })
	l := newLimiter(t, c, Limit{Rate: fleetRate, Period: time.Second, Burst: fleetBurst}, Options{})
	var out adaptOutput
	var wg sync.WaitGroup
	if throttleAt != 0 {
		wg.Go(func() {
			time.Sleep(time.Until(time.Unix(0, throttleAt)))
			if err := l.ThrottledQuota(context.Background(), testKey, 0, quota); err != nil {
				t.Errorf("ThrottledQuota: %v", err)
			}
			out.Reported = time.Now().UnixNano()
		})
	}
	out.Grants = hammerEach(t, l, goroutines, time.Unix(0, start), time.Unix(0, stop))
	wg.Wait()
	var err error
	if out.Rate, err = l.CurrentRate(context.Background(), testKey); err != nil {
		t.Fatal(err)
	}
	js, err := json.Marshal(out)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("adapt %s\n", js)
}

// adaptOutput is what an adaptive helper process reports.
type adaptOutput struct {
	Grants   [][2]int64 // start and end of every granted Wait, unix nanoseconds
	Reported int64      // when its 429 report returned; 0: it made none
	Rate     float64    // the shared rate it saw at the end
}

// hammerEach is hammer, keeping every grant's start and end.
func hammerEach(t testing.TB, l *Limiter, n int, start, stop time.Time) [][2]int64 {
	time.Sleep(time.Until(start))
	var mu sync.Mutex
	var all [][2]int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
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
				g := [2]int64{before, time.Now().UnixNano()}
				mu.Lock()
				all = append(all, g)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return all
}

// TestFleetAdaptsProcesses runs 3 processes on one key at 50/s; one of them
// reports a 429 naming 20/s a second in. Every process must then follow the
// shared rate, 95 % of 20/s: the grants that started after the report
// returned stay within burst + rate·span of that rate (exact, as in
// checkFleetRate) and use at least 95 % of it outside the pause, and every
// process ends up seeing the rate.
func TestFleetAdaptsProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes and runs for seconds")
	}
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		const processes, goroutines = 3, 3
		start := time.Now().Add(2 * time.Second)
		stop := start.Add(fleetWindow)
		throttleAt := start.Add(time.Second)
		outs := make([]adaptOutput, processes)
		var wg sync.WaitGroup
		for i := range processes {
			at := int64(0)
			if i == 0 {
				at = throttleAt.UnixNano()
			}
			cmd := exec.Command(os.Args[0], "-test.run=^TestAdaptHelperProcess$", "-test.count=1")
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s %d %d %d %d %d %d", adaptHelperEnv, r.Addr, r.DB,
				start.UnixNano(), stop.UnixNano(), goroutines, at, adaptQuota))
			wg.Go(func() {
				out, err := cmd.CombinedOutput()
				if err != nil {
					t.Errorf("helper process %d: %v\n%s", i, err, out)
					return
				}
				for line := range strings.Lines(string(out)) {
					if js, ok := strings.CutPrefix(strings.TrimSpace(line), "adapt "); ok {
						if err := json.Unmarshal([]byte(js), &outs[i]); err != nil {
							t.Errorf("helper process %d: %v", i, err)
						}
						return
					}
				}
				t.Errorf("helper process %d: no adapt line in\n%s", i, out)
			})
		}
		wg.Wait()
		if t.Failed() {
			return
		}
		reported := outs[0].Reported
		if reported == 0 {
			t.Fatal("the reporting process made no report")
		}
		want := 0.95 * adaptQuota
		var after grants
		for i, o := range outs {
			if math.Abs(o.Rate-want) > 0.01 {
				t.Errorf("process %d ended seeing rate %v; want %v", i, o.Rate, want)
			}
			n := 0
			for _, g := range o.Grants {
				if g[0] >= reported {
					after.add(grants{N: 1, First: g[0], Last: g[1]})
					n++
				}
			}
			t.Logf("process %d: %d grants, %d after the report", i, len(o.Grants), n)
		}
		span := time.Duration(after.Last - after.First)
		if span < fleetWindow/2 {
			t.Fatalf("grants after the report spanned %s; want most of the %s window", span, fleetWindow)
		}
		burst := math.Max(1, math.Floor(fleetBurst*want/fleetRate))
		upper := burst + want*span.Seconds()
		// Nothing is granted during the 429's pause (Cooldown 250 ms plus up
		// to half of it), which the span may include.
		lower := 0.95 * want * (span - 375*time.Millisecond).Seconds()
		t.Logf("%d grants in %s after the report: bounds [%.1f, %.1f]", after.N, span, lower, upper)
		if float64(after.N) > upper+1e-9 {
			t.Errorf("%d grants in %s after the 429: more than burst + %.0f/s·span = %.1f", after.N, span, want, upper)
		}
		if float64(after.N) < lower {
			t.Errorf("%d grants in %s after the 429: fewer than 95%% of %.0f/s·span = %.1f", after.N, span, want, lower)
		}
	})
}
