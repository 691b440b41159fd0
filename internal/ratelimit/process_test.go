package ratelimit

import (
	"encoding/json"
	"fmt"
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
