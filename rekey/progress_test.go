package rekey_test

import (
	"context"
	"testing"

	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

// TestPlanProgress: Request.Progress hears each step's pages as they are
// read (discovery, then the read of current keypairs), and one last call,
// Done, with every target matched, before Start writes anything.
func TestPlanProgress(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 1000, NoWorker: true})
	var got []rekey.PlanProgress
	req := rekey.Request{Keypair: "kp-new", Discover: &rekey.Discover{}, Progress: func(p rekey.PlanProgress) {
		got = append(got, p)
	}}
	st, err := env.Client.Start(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	steps := map[string]int{}
	var prev rekey.PlanProgress
	for i, p := range got {
		if p.Step == prev.Step && (p.Pages < prev.Pages || p.Matched < prev.Matched) {
			t.Errorf("call %d went back: %+v after %+v", i, p, prev)
		}
		if p.Pages > p.TotalPages || p.Elapsed <= 0 || p.Done != (i == len(got)-1) {
			t.Errorf("call %d of %d: %+v", i+1, len(got), p)
		}
		steps[p.Step]++
		prev = p
	}
	last := got[len(got)-1]
	// 1000 servers are 11 pages of 100 overlapping by 2.
	if steps[rekey.StepDiscover] < 2 || steps[rekey.StepRead] < 2 || last.Step != rekey.StepRead ||
		last.Pages != 11 || last.TotalPages != 11 || last.Listed != 1000 || last.Targets != 1000 || last.Matched != 1000 {
		t.Errorf("steps %v, last call %+v: want both steps, 11 pages, all 1000 servers matched", steps, last)
	}
	if last.Rate() <= 0 || last.ETA() != 0 {
		t.Errorf("rate %.1f, ETA %s when done", last.Rate(), last.ETA())
	}
	if st.Rotation.Counts.Total != 1000 {
		t.Errorf("rotation of %d servers", st.Rotation.Counts.Total)
	}
}
