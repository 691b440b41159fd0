package rekey_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
	"github.com/cph-rekey/cph-rekey/rekey"
)

// TestNamespaces: clients of two namespaces on one Redis start rotations
// of the same id, and each lists, pages, reads and cancels only its own;
// the cancelled rotation's event is on its namespace's event queue.
func TestNamespaces(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		clients := map[string]*rekey.Client{}
		for i, ns := range []string{"", "blue"} {
			c, err := rekey.NewClient(r.Client(t), rekey.Options{Namespace: ns})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { c.Close() })
			if c.Namespace() != ns {
				t.Fatalf("Namespace() = %q, want %q", c.Namespace(), ns)
			}
			clients[ns] = c
			for j := range 2 + i {
				req := rekey.Request{ID: fmt.Sprintf("r-%d", j), Keypair: "kp-" + ns, NoSkipMatching: true,
					Targets: []rekey.Target{{ServerID: "a"}, {ServerID: "b"}}}
				if _, err := c.Start(ctx, req); err != nil {
					t.Fatalf("namespace %q: %v", ns, err)
				}
			}
		}
		for ns, c := range clients {
			want := map[string]int{"": 2, "blue": 3}[ns]
			rots, total, err := c.RotationsPage(ctx, 1, 10)
			if err != nil {
				t.Fatal(err)
			}
			if total != want || len(rots) != want-1 {
				t.Errorf("namespace %q: RotationsPage(1, 10) = %d rotations of %d, want %d of %d", ns, len(rots), total, want-1, want)
			}
			for _, rot := range rots {
				if rot.Keypair != "kp-"+ns {
					t.Errorf("namespace %q lists %s of keypair %s", ns, rot.ID, rot.Keypair)
				}
			}
			sts, err := c.Stats(ctx, "r-0", "r-1")
			if err != nil || len(sts) != 2 || len(sts[0].History) != 0 {
				t.Errorf("namespace %q: Stats = %+v, %v; want two empty stats", ns, sts, err)
			}
		}
		if _, err := clients[""].Rotation(ctx, "r-2"); !errors.Is(err, rekey.ErrNotFound) {
			t.Errorf("the default namespace reads blue's r-2: %v", err)
		}
		if _, err := clients["blue"].Cancel(ctx, "r-0"); err != nil {
			t.Fatal(err)
		}
		if rot, err := clients[""].Rotation(ctx, "r-0"); err != nil || rot.State != rekey.StateRunning {
			t.Errorf("the default namespace's r-0 after blue's cancel: %+v, %v; want running", rot, err)
		}
		insp := asynq.NewInspectorFromRedisClient(r.Client(t))
		if _, err := insp.GetTaskInfo(rekey.EventQueueIn("blue"), rekey.EventTaskID("r-0")); err != nil {
			t.Errorf("blue's event is not on %s: %v", rekey.EventQueueIn("blue"), err)
		}
		if _, err := insp.GetTaskInfo(rekey.EventQueue, rekey.EventTaskID("r-0")); err == nil {
			t.Errorf("blue's event is on the default namespace's queue")
		}
	})
}
