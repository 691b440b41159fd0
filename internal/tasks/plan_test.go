package tasks

import (
	"context"
	"testing"
)

// TestMakePlanOnAGrowingList: servers created on top while the plan reads
// the list (a few before every page, read many at once) do not change the
// places the plan gives: each target is found once, at its place in the
// list the plan started from, and the progress it reports ends with every
// target matched.
func TestMakePlanOnAGrowingList(t *testing.T) {
	tests := []struct {
		name            string
		servers, churn  int
		every           int // every how many servers one is a target
		wantMinReReads  int
		wantMaxNotFound int
	}{
		{name: "still", servers: 5000, every: 1},
		{name: "2 created a read", servers: 5000, churn: 2, every: 3},
		{name: "5 created a read", servers: 20000, churn: 5, every: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fleet := newMovingFleet(tt.servers)
			fleet.planChurn = tt.churn
			place := map[string]int{}
			var ts []Target
			for i := 0; i < tt.servers; i += tt.every {
				ts = append(ts, Target{ServerID: fleet.ids[i]})
				place[fleet.ids[i]] = i
			}
			var last PlanProgress
			calls := 0
			plan, err := MakePlan(context.Background(), Spec{Keypair: "kp-new", Targets: ts, ChunkSize: 100, MaxAttempts: 3,
				SkipMatching: true, Progress: func(p PlanProgress) {
					if p.Pages < last.Pages || p.Matched < last.Matched {
						t.Errorf("progress went back: %+v after %+v", p, last)
					}
					last = p
					calls++
				}}, fleet)
			if err != nil {
				t.Fatal(err)
			}
			if len(plan.NotFound) != 0 {
				t.Fatalf("%d targets not found", len(plan.NotFound))
			}
			seen := map[string]bool{}
			for _, c := range plan.Chunks {
				for _, e := range c {
					if seen[e.ServerID] {
						t.Fatalf("%s planned twice", e.ServerID)
					}
					seen[e.ServerID] = true
					if e.Pos != place[e.ServerID] {
						t.Fatalf("%s at %d, want %d: its place in the list the plan started from", e.ServerID, e.Pos, place[e.ServerID])
					}
				}
			}
			if len(seen) != len(ts) || last.Matched != len(ts) || last.Targets != len(ts) || last.Pages != fleet.pages || calls < 2 {
				t.Errorf("%d planned, last progress %+v after %d reads (%d calls), want all %d matched", len(seen), last, fleet.pages, calls, len(ts))
			}
			t.Logf("%d servers, %d created a read: %d reads, %d read again", tt.servers, tt.churn, fleet.pages, last.ReReads)
		})
	}
}
