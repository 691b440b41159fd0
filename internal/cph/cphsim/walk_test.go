package cphsim

import (
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// TestListServersWalkOnAMovingList: the client walks a list that grows
// and shrinks while it reads (a read every 50 ms of simulated time, 5
// servers created and 1 deleted a second): no server that was there
// throughout is missed, none is listed twice, and the ranks the walk gives
// servers stand at one shift from where the servers end up.
func TestListServersWalkOnAMovingList(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); now = now.Add(50 * time.Millisecond); return now }
	sim := New(Options{ProjectID: "0123456789abcdef0123456789abcdef", AccessKey: "ak", SecretKey: "sk", Servers: 5000, CreateRate: 5, DeleteRate: 1, Clock: clock, Seed: 3})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	c, err := cph.NewClient(cph.Config{Endpoint: srv.URL, ProjectID: "0123456789abcdef0123456789abcdef", Credentials: cph.Credentials{AccessKey: "ak", SecretKey: "sk"}})
	if err != nil {
		t.Fatal(err)
	}
	plan := map[string]int{}
	err = c.ListServers(context.Background(), cph.ServerFilter{}, func(page []cph.Server) error {
		for _, s := range page {
			if _, dup := plan[s.ServerID]; dup {
				return fmt.Errorf("%s listed twice", s.ServerID)
			}
			plan[s.ServerID] = len(plan)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	live := sim.Servers()
	lo, hi := 1<<30, -1
	for i, s := range live {
		p, ok := plan[s.ServerID]
		if !ok {
			continue
		}
		lo, hi = min(lo, i-p), max(hi, i-p)
	}
	st := sim.Stats()
	if len(plan) < 5000-st.ServersDeleted {
		t.Errorf("the walk saw %d of the 5000 servers; %d were deleted", len(plan), st.ServersDeleted)
	}
	if hi-lo > st.ServersDeleted {
		t.Errorf("shifts from %d to %d across the list: more spread than the %d deletions explain", lo, hi, st.ServersDeleted)
	}
	if st.ServersCreated == 0 {
		t.Fatal("no server created during the walk: the test did not move the list")
	}
}
