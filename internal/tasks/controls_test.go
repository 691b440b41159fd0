package tasks

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantErr bool
	}{
		{"5", Size{N: 5}, false},
		{"0", Size{N: 0}, false},
		{"10%", Size{N: 10, Percent: true}, false},
		{" 100% ", Size{N: 100, Percent: true}, false},
		{"101%", Size{}, true},
		{"-1", Size{}, true},
		{"ten", Size{}, true},
		{"", Size{}, true},
		{"5%%", Size{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSize(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	if got := (Size{N: 10, Percent: true}).Floor(55); got != 5 {
		t.Errorf("10%% of 55 = %d, want 5 (the 6th failure trips, as SSM)", got)
	}
}

func TestParseWaves(t *testing.T) {
	tests := []struct {
		in      string
		total   int
		want    []int
		wantErr string
	}{
		{"", 100, []int{100}, ""},
		{"1,10,10%,100%", 100, []int{1, 10, 10, 79}, ""},
		{"1,10", 100, []int{1, 10, 89}, ""},
		{"1,10,10%", 5, []int{1, 4}, ""},
		{"50%,50%", 5, []int{3, 2}, ""},
		{"1%", 30, []int{1, 29}, ""},
		{"0,10", 0, nil, "wave 1"},
		{"1,x", 0, nil, "wave 2"},
		{strings.Repeat("1,", MaxWaves) + "1", 0, nil, "at most"},
	}
	for _, tt := range tests {
		ws, err := ParseWaves(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseWaves(%q) error %v, want one naming %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Fatalf("ParseWaves(%q): %v", tt.in, err)
		}
		if got := waveServers(ws, tt.total); fmt.Sprint(got) != fmt.Sprint(tt.want) {
			t.Errorf("waves %q of %d = %v, want %v", tt.in, tt.total, got, tt.want)
		}
	}
}

func TestMakePlanWavesAreWholeChunks(t *testing.T) {
	var ts []Target
	for i := range 100 {
		ts = append(ts, Target{ServerID: fmt.Sprintf("s%03d", i)})
	}
	ws, _ := ParseWaves("1,10,10%")
	plan, err := MakePlan(context.Background(), Spec{Keypair: "kp", Targets: ts, ChunkSize: 5, MaxAttempts: 3, Waves: ws}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rot := plan.Rotation
	// Waves of 1, 10, 10 and 79 servers: 1 + 2 + 2 + 16 chunks.
	want := []Wave{{1, 1}, {3, 10}, {5, 10}, {21, 79}}
	if fmt.Sprint(rot.Waves) != fmt.Sprint(want) || rot.Chunks != 21 || len(plan.Chunks) != 21 {
		t.Fatalf("waves %v, %d chunks; want %v, 21", rot.Waves, rot.Chunks, want)
	}
	if len(plan.Chunks[0]) != 1 || len(plan.Chunks[20]) != 4 {
		t.Fatalf("first chunk %d servers, last %d; want 1 and 4", len(plan.Chunks[0]), len(plan.Chunks[20]))
	}
	if rot.MaxErrors != 10 || !rot.Verify {
		t.Fatalf("max errors %d, verify %v; want the defaults 10 (10%%) and true", rot.MaxErrors, rot.Verify)
	}
	for w, c := range map[int]int{1: 1, 2: 3, 3: 4, 4: 21} {
		if got := rot.WaveOf(c); got != w {
			t.Errorf("WaveOf(%d) = %d, want %d", c, got, w)
		}
	}
}

// controlled creates a rotation whose chunks have the given sizes,
// in the given waves.
func controlled(t *testing.T, s *Store, id string, sizes []int, waves []Wave, maxErrors int, pause bool) {
	t.Helper()
	var chunks [][]Entry
	n := 0
	for _, size := range sizes {
		var ids []string
		for range size {
			ids = append(ids, fmt.Sprintf("s%d", n))
			n++
		}
		chunks = append(chunks, entries(ids...))
	}
	rot := testRotation(id, chunks)
	rot.Waves, rot.MaxErrors, rot.PauseAfterWave = waves, maxErrors, pause
	if _, err := s.Create(context.Background(), rot, chunks, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
}

func checkpoint(t *testing.T, s *Store, id string, chunk int, servers ...string) {
	t.Helper()
	jobs := map[string]string{}
	for _, sid := range servers {
		jobs[sid] = "job-" + sid
	}
	if _, err := s.Checkpoint(context.Background(), id, chunk, len(servers), "req", jobs, nil, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
}

func outcomes(o Outcome, ids ...string) []Resolution {
	rs := make([]Resolution, len(ids))
	for i, id := range ids {
		rs[i] = Resolution{ServerID: id, Outcome: o, Attempts: 1, Code: "C"}
	}
	return rs
}

func TestErrorBudgetTripsAtNPlusOne(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		controlled(t, s, "r1", []int{5, 5}, []Wave{{2, 10}}, 2, false)
		checkpoint(t, s, "r1", 1, "s0", "s1", "s2", "s3", "s4")
		if _, err := s.Resolve(ctx, "r1", 1, 1, outcomes(OutcomeFailed, "s0", "s1"), time.Time{}, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		if rot := mustRotation(t, s, "r1"); rot.State != StateRunning {
			t.Fatalf("state %s after 2 failures with max 2, want running", rot.State)
		}
		// Two more failures in one call: the third one trips, and the
		// reason names it.
		if _, err := s.Resolve(ctx, "r1", 1, 1, outcomes(OutcomeFailed, "s2", "s3"), time.Time{}, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		rot := mustRotation(t, s, "r1")
		if !rot.Halted() || !strings.Contains(rot.Reason, "3 failed > max 2") {
			t.Fatalf("state %s, reason %q; want halted at 3 failed > max 2", rot.State, rot.Reason)
		}
		if in, err := s.MarkIntent(ctx, "r1", 2); err != nil || in.Go || in.State != StateFailed {
			t.Fatalf("MarkIntent on a halted rotation = %+v, %v; want no go", in, err)
		}
		if _, err := s.Resume(ctx, "r1", -1, "test", -1); err == nil || !strings.Contains(err.Error(), "still exceeded") {
			t.Fatalf("Resume without a larger budget: %v", err)
		}
		if _, err := s.Resume(ctx, "r1", 5, "test", -1); err != nil {
			t.Fatal(err)
		}
		if rot := mustRotation(t, s, "r1"); rot.State != StateRunning || rot.MaxErrors != 5 || rot.Reason != "" {
			t.Fatalf("after resume: %+v", rot)
		}
		if in, err := s.MarkIntent(ctx, "r1", 2); err != nil || !in.Go {
			t.Fatalf("MarkIntent after resume = %+v, %v", in, err)
		}
	})
}

func TestWavesAdvanceOnceAndPause(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		controlled(t, s, "r1", []int{2, 1, 1}, []Wave{{1, 2}, {3, 2}}, 5, true)
		checkpoint(t, s, "r1", 1, "s0", "s1")
		res, err := s.Resolve(ctx, "r1", 1, 1, outcomes(OutcomeSucceeded, "s0"), time.Time{}, false, time.Now())
		if err != nil || res.Advanced != 0 {
			t.Fatalf("half a wave: %+v, %v; want no advance", res, err)
		}
		res, err = s.Resolve(ctx, "r1", 1, 1, outcomes(OutcomeSucceeded, "s0", "s1"), time.Time{}, false, time.Now())
		if err != nil || res.Advanced != 2 {
			t.Fatalf("wave 1 done: %+v, %v; want wave 2 started", res, err)
		}
		if res, _ := s.Resolve(ctx, "r1", 1, 1, outcomes(OutcomeSucceeded, "s1"), time.Time{}, false, time.Now()); res.Advanced != 0 {
			t.Fatalf("repeated resolve advanced again: %+v", res)
		}
		rot := mustRotation(t, s, "r1")
		if rot.Wave != 2 || rot.State != StatePaused || !strings.Contains(rot.Reason, "wave 1 of 2 finished") {
			t.Fatalf("after wave 1: wave %d, %s, %q; want wave 2, paused after the wave", rot.Wave, rot.State, rot.Reason)
		}
		if w, err := s.Resume(ctx, "r1", -1, "test", -1); err != nil || w != 2 {
			t.Fatalf("Resume = %d, %v; want wave 2", w, err)
		}
	})
}

func TestFailingWaveDoesNotAdvance(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		controlled(t, s, "r1", []int{2, 2}, []Wave{{1, 2}, {2, 2}}, 0, false)
		checkpoint(t, s, "r1", 1, "s0", "s1")
		res, err := s.Resolve(ctx, "r1", 1, 1, append(outcomes(OutcomeFailed, "s0"), outcomes(OutcomeSucceeded, "s1")...), time.Time{}, false, time.Now())
		if err != nil || res.Advanced != 0 || !res.Complete {
			t.Fatalf("failing wave: %+v, %v; want complete, no advance", res, err)
		}
		rot := mustRotation(t, s, "r1")
		if !rot.Halted() || rot.Wave != 1 {
			t.Fatalf("rotation %s in wave %d; want halted in wave 1", rot.State, rot.Wave)
		}
		// Resuming with a budget that holds starts the waiting wave.
		if w, err := s.Resume(ctx, "r1", 1, "test", -1); err != nil || w != 2 {
			t.Fatalf("Resume = %d, %v; want wave 2", w, err)
		}
	})
}

func TestCancelClosesWhatWasNotSubmitted(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		controlled(t, s, "r1", []int{2, 2, 2}, []Wave{{3, 6}}, 5, false)
		checkpoint(t, s, "r1", 1, "s0", "s1") // in flight
		if in, err := s.MarkIntent(ctx, "r1", 3); err != nil || !in.Go {
			t.Fatalf("MarkIntent = %+v, %v", in, err) // chunk 3's call has started
		}
		closed, finished, err := s.Cancel(ctx, "r1", "test", time.Now())
		if err != nil || closed != 2 || finished {
			t.Fatalf("Cancel = %d, %v, %v; want chunk 2's 2 servers closed, not finished", closed, finished, err)
		}
		if in, _ := s.MarkIntent(ctx, "r1", 3); in.Go || in.State != StateCancelled {
			t.Fatalf("MarkIntent after cancel = %+v", in)
		}
		// A transient failure in flight is not retried: it is cancelled.
		retry := Resolution{ServerID: "s0", Retry: &Entry{ServerID: "s0", Keypair: "kp-new", Attempt: 2}, Attempts: 1}
		res, err := s.Resolve(ctx, "r1", 1, 1, append([]Resolution{retry}, outcomes(OutcomeSucceeded, "s1")...), time.Time{}, false, time.Now())
		if pool, _ := s.RetryPool(ctx, "r1", time.Now()); err != nil || !res.Complete || pool.Size != 0 {
			t.Fatalf("Resolve = %+v, %v, retry pool %+v; want complete, no retries", res, err, pool)
		}
		// Chunk 3's started call checkpoints and its jobs end.
		checkpoint(t, s, "r1", 3, "s4", "s5")
		res, err = s.Resolve(ctx, "r1", 3, 1, outcomes(OutcomeSucceeded, "s4", "s5"), time.Time{}, false, time.Now())
		if err != nil || !res.Finished {
			t.Fatalf("last Resolve = %+v, %v; want finished", res, err)
		}
		rot := mustRotation(t, s, "r1")
		want := Counts{Total: 6, Succeeded: 3, Cancelled: 3, Submitted: 4}
		if rot.State != StateCancelled || rot.Counts != want {
			t.Fatalf("rotation %s %+v; want cancelled %+v", rot.State, rot.Counts, want)
		}
		seen := 0
		err = s.Report(ctx, "r1", func(row ReportRow) error {
			seen++
			if row.Outcome != OutcomeSucceeded && row.Outcome != OutcomeCancelled {
				t.Errorf("server %s is %s", row.ServerID, row.Outcome)
			}
			return nil
		})
		if err != nil || seen != 6 {
			t.Fatalf("report: %d rows, %v", seen, err)
		}
	})
}

// TestWaveEndsOnlyWhenVerified: a server whose job succeeded is not
// terminal until its keypair is read back, so its wave does not end (and
// the next one does not start) before that; a page of the next wave's
// servers does not hold this wave's verification up.
func TestWaveEndsOnlyWhenVerified(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		controlled(t, s, "r1", []int{2, 2}, []Wave{{1, 2}, {2, 2}}, 0, false)
		checkpoint(t, s, "r1", 1, "s0", "s1")
		b, err := s.Batch(ctx, "r1", 1)
		if err != nil {
			t.Fatal(err)
		}
		var rs []Resolution
		for _, e := range b.Servers {
			rs = append(rs, Resolution{ServerID: e.ServerID, Verify: true, JobID: "job-" + e.ServerID, Attempts: 1, Entry: e})
		}
		res, err := s.Resolve(ctx, "r1", 1, 1, rs, time.Time{}, false, time.Now())
		if err != nil || res.Advanced != 0 || res.Complete {
			t.Fatalf("jobs succeeded, not verified: %+v, %v; want no advance", res, err)
		}
		pend, pages, err := s.Verifying(ctx, "r1", 1, 10)
		if err != nil || len(pend) != 2 || pages[0] != (InFlight{}) {
			t.Fatalf("verifying %+v, pages %v, %v; want s0 and s1 on page 0 with nothing of wave 1 in flight", pend, pages, err)
		}
		var vs []Resolution
		for _, p := range pend {
			vs = append(vs, verified(p, OutcomeSucceeded, "", ""))
		}
		res, err = s.Resolve(ctx, "r1", 1, 1, vs, time.Time{}, true, time.Now())
		if err != nil || res.Advanced != 2 || !res.Complete {
			t.Fatalf("verified: %+v, %v; want wave 2 started", res, err)
		}
	})
}
