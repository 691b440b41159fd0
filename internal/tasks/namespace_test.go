package tasks

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

func TestNamespaceNames(t *testing.T) {
	tests := []struct {
		ns                      Namespace
		keys, limiter, pollName string
	}{
		// The default namespace keeps the names of releases without one.
		{"", "cph-rekey:", "cph-rekey:rl:", "rekey-poll"},
		{"blue", "cph-rekey.blue:", "cph-rekey.blue:rl:", "blue.rekey-poll"},
		{"rl", "cph-rekey.rl:", "cph-rekey.rl:rl:", "rl.rekey-poll"},
	}
	for _, tt := range tests {
		if err := tt.ns.Validate(); err != nil {
			t.Errorf("Namespace(%q).Validate() = %v", tt.ns, err)
		}
		if got := tt.ns.KeyPrefix(); got != tt.keys {
			t.Errorf("Namespace(%q).KeyPrefix() = %q, want %q", tt.ns, got, tt.keys)
		}
		if got := tt.ns.LimiterPrefix(); got != tt.limiter {
			t.Errorf("Namespace(%q).LimiterPrefix() = %q, want %q", tt.ns, got, tt.limiter)
		}
		if got := tt.ns.Queue(QueuePoll); got != tt.pollName {
			t.Errorf("Namespace(%q).Queue(QueuePoll) = %q, want %q", tt.ns, got, tt.pollName)
		}
		if got := tt.ns.Queues(); len(got) != len(Queues()) || got[tt.pollName] != Queues()[QueuePoll] {
			t.Errorf("Namespace(%q).Queues() = %v, want Queues() under names like %q", tt.ns, got, tt.pollName)
		}
		if strings.ContainsAny(tt.ns.KeyPrefix(), "{}") {
			t.Errorf("Namespace(%q).KeyPrefix() = %q moves the rotations' hash tags", tt.ns, tt.ns.KeyPrefix())
		}
	}
}

func TestNamespaceValidate(t *testing.T) {
	for _, ns := range []Namespace{"a{b}", "a:b", "a.b", "a b", "-a", "_a", "ü", Namespace(strings.Repeat("a", 33)), "a\n"} {
		err := ns.Validate()
		if err == nil {
			t.Errorf("Namespace(%q).Validate() = nil, want an error", ns)
			continue
		}
		if !strings.Contains(err.Error(), "namespace") || !strings.Contains(err.Error(), strings.ReplaceAll(string(ns), "\n", `\n`)) {
			t.Errorf("Namespace(%q).Validate() = %q: does not name the namespace", ns, err)
		}
	}
	for _, ns := range []Namespace{"a", "A-1_b", Namespace(strings.Repeat("a", 32))} {
		if err := ns.Validate(); err != nil {
			t.Errorf("Namespace(%q).Validate() = %v", ns, err)
		}
	}
}

// Two deployments on one Redis run rotations of the same id: each sees only
// its own, its tasks go to its own queues, and a control in one leaves the
// other alone.
func TestNamespacesShareARedis(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		rdb := r.Client(t)
		ctx := context.Background()
		enq := asynq.NewClientFromRedisClient(rdb)
		insp := asynq.NewInspectorFromRedisClient(rdb)
		ids := []string{"s1", "s2", "s3"}
		targets := []Target{{ServerID: "s1"}, {ServerID: "s2"}, {ServerID: "s3"}}
		stores := map[Namespace]*Store{}
		for _, ns := range []Namespace{"", "blue"} {
			stores[ns] = NewStore(rdb, ns)
			plan, err := MakePlan(ctx, Spec{ID: "r", Keypair: "kp-" + string(ns), Targets: targets, ChunkSize: 1, MaxAttempts: 3, SkipMatching: true},
				fleetOn("kp-old", ids...))
			if err != nil {
				t.Fatal(err)
			}
			if st, err := Start(ctx, stores[ns], enq, plan, TaskOptions{}, time.Now()); err != nil || !st.Created {
				t.Fatalf("Start in namespace %q = %+v, %v; want a new rotation", ns, st, err)
			}
		}
		for ns, s := range stores {
			rots, err := s.Rotations(ctx, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(rots) != 1 || rots[0].Keypair != "kp-"+string(ns) {
				t.Fatalf("namespace %q lists %d rotations, want only its own", ns, len(rots))
			}
			for c := 1; c <= 3; c++ {
				if _, err := insp.GetTaskInfo(ns.Queue(QueueSubmit), SubmitTaskID("r", c)); err != nil {
					t.Errorf("namespace %q: chunk %d's submit task not on %s: %v", ns, c, ns.Queue(QueueSubmit), err)
				}
			}
		}
		if _, _, err := Cancel(ctx, stores["blue"], enq, "r", "test", TaskOptions{}, time.Now()); err != nil {
			t.Fatal(err)
		}
		if got := mustRotation(t, stores["blue"], "r").State; got != StateCancelled {
			t.Errorf("blue's rotation is %s after its cancel, want cancelled", got)
		}
		if got := mustRotation(t, stores[""], "r").State; got != StateRunning {
			t.Errorf("the default namespace's rotation is %s after blue's cancel, want running", got)
		}
		if _, err := insp.GetTaskInfo(Namespace("blue").Queue(QueueEvents), FinishedTaskID("r")); err != nil {
			t.Errorf("blue's completion event is not on its own queue: %v", err)
		}
		if _, err := insp.GetTaskInfo(QueueEvents, FinishedTaskID("r")); err == nil {
			t.Errorf("blue's cancel sent a completion event on the default namespace's queue")
		}
		// Every key either namespace wrote carries its prefix.
		keys, err := rdb.Keys(ctx, "cph-rekey*").Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			if !strings.HasPrefix(k, "cph-rekey:") && !strings.HasPrefix(k, "cph-rekey.blue:") {
				t.Errorf("key %q is in neither namespace", k)
			}
		}
	})
}
