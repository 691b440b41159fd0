package cphsim_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

// churnTransport moves the simulator's clock by a random step before each
// request, so servers are created and deleted between any two reads.
type churnTransport struct {
	rt    http.RoundTripper
	clock *fakeClock
	mu    sync.Mutex
	rng   *rand.Rand
	step  time.Duration
	calls int
}

func (c *churnTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.mu.Lock()
	d := time.Duration(c.rng.Int64N(int64(c.step) + 1))
	c.calls++
	c.mu.Unlock()
	c.clock.Add(d)
	return c.rt.RoundTrip(r)
}

// TestListServersOnAChurningFleet is the parallel reader's property on the
// simulator: with servers created on top and deleted at random between
// reads, and up to 16 reads in flight answering in any order, every
// server of the fleet the walk started from that was not deleted is listed
// exactly once, in list order, and nothing is listed twice.
func TestListServersOnAChurningFleet(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	trials := 12
	if testing.Short() {
		trials = 4
	}
	for trial := range trials {
		n := 300 + rng.IntN(4000)
		create, del := rng.Float64()*40, rng.Float64()*10 // per second, the clock moving up to 100 ms a read
		name := fmt.Sprintf("trial %d: %d servers, +%.1f/s -%.1f/s", trial, n, create, del)
		e := newEnv(t, cphsim.Options{Servers: n, Seed: uint64(trial) + 1, CreateRate: create, DeleteRate: del})
		start := e.sim.Servers()
		tr := &churnTransport{rt: e.srv.Client().Transport, clock: e.clock, rng: rand.New(rand.NewPCG(uint64(trial), 1)),
			step: 100 * time.Millisecond}
		c, err := cph.NewClient(cph.Config{Endpoint: e.srv.URL, ProjectID: testProject,
			Credentials: cph.Credentials{AccessKey: testAK, SecretKey: testSK}, HTTPClient: &http.Client{Transport: tr}, Now: e.clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		place := map[string]int{}
		var last cph.ListProgress
		err = c.ListServers(context.Background(), cph.ServerFilter{Progress: func(p cph.ListProgress) { last = p }},
			func(page []cph.Server) error {
				for _, s := range page {
					if _, dup := place[s.ServerID]; dup {
						return fmt.Errorf("%s listed twice", s.ServerID)
					}
					place[s.ServerID] = len(place)
				}
				return nil
			})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		prev := -1
		for _, s := range start {
			at, ok := place[s.ServerID]
			switch {
			case !ok && !e.sim.Deleted(s.ServerID):
				t.Fatalf("%s: %s never listed", name, s.ServerID)
			case ok && at < prev:
				t.Fatalf("%s: %s listed out of order", name, s.ServerID)
			case ok:
				prev = at
			}
		}
		if last.Pages != tr.calls || last.TotalPages != last.Pages || last.Servers != len(place) {
			t.Errorf("%s: last progress %+v after %d calls and %d servers", name, last, tr.calls, len(place))
		}
		t.Logf("%s: %d calls for %d pages, %d read again", name, tr.calls, (n+97)/98, last.ReReads)
	}
}
