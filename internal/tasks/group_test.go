package tasks

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// TestGroupFailed: the group sums the latest failed count each part
// reports, however the reports interleave or repeat, and halts once, at
// the report that takes the sum past its budget.
func TestGroupFailed(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		g := &Group{ID: "g", Fingerprint: "fp", Parts: []string{"g.1", "g.2"}, MaxErrors: 10, OnHalt: HaltAll, CreatedAt: time.Now()}
		if _, err := s.CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		// Each part reports its counts 1..6 from many tasks at once, in
		// any order: the latest are 6 + 6 = 12 > 10.
		var wg sync.WaitGroup
		var mu sync.Mutex
		halts := 0
		for _, part := range g.Parts {
			for n := int64(1); n <= 6; n++ {
				wg.Go(func() {
					halted, err := s.GroupFailed(ctx, g.ID, part, n)
					if err != nil {
						t.Error(err)
					}
					if halted {
						mu.Lock()
						halts++
						mu.Unlock()
					}
				})
			}
		}
		wg.Wait()
		got, err := s.Group(ctx, g.ID)
		if err != nil {
			t.Fatal(err)
		}
		if halts != 1 || !strings.Contains(got.Halted, "failed > max 10") {
			t.Fatalf("%d halts, reason %q: want one, past 10 failed", halts, got.Halted)
		}
		// A resume is refused within the budget, and lifts the halt with a
		// larger one.
		for _, id := range g.Parts {
			if _, err := s.Create(ctx, &Rotation{ID: id, Group: g.ID, Keypair: "kp", Fingerprint: id, MaxErrors: -1}, nil, nil, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		if err := ResumeGroup(ctx, s, nil, g.ID, nil, TaskOptions{}); err == nil || !strings.Contains(err.Error(), "12 failed > max 10") {
			t.Fatalf("resume within the budget: %v, want it refused at 6 + 6 failed", err)
		}
		if err := ResumeGroup(ctx, s, nil, g.ID, &Size{N: 12}, TaskOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Group(ctx, g.ID); got.Halted != "" || got.MaxErrors != 12 {
			t.Fatalf("after the resume: halted %q, budget %d", got.Halted, got.MaxErrors)
		}
	})
}

// TestGroupHaltOlderThanAResume: a task that read the group halted before
// a resume of the whole lifted the halt does not halt a part the resume
// set running; a later halt of the group does, and so does a halt the
// part was resumed under (a part resumed alone while the group was
// halted).
func TestGroupHaltOlderThanAResume(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		g := &Group{ID: "g", Fingerprint: "fp", Parts: []string{"g.1"}, MaxErrors: -1, OnHalt: HaltAll, CreatedAt: time.Now()}
		if _, err := s.CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		chunks := [][]Entry{entries("s1", "s2")}
		part := testRotation("g.1", chunks)
		part.Group, part.MaxErrors = g.ID, -1
		if _, err := s.Create(ctx, part, chunks, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
		enq := &recordingEnqueuer{tasks: map[string]*asynq.Task{}}
		resume := func() {
			t.Helper()
			if _, _, err := Resume(ctx, s, enq, "g.1", nil, "test", TaskOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		halt := func(want State) {
			t.Helper()
			cur, err := s.Group(ctx, g.ID)
			if err != nil || cur.Halted == "" {
				t.Fatalf("group %+v, %v: want it halted", cur, err)
			}
			haltFor(t, s, cur, want)
		}
		if ok, err := s.HaltGroup(ctx, g.ID, "part g.2 halted"); err != nil || !ok {
			t.Fatalf("halt the group: %v %v", ok, err)
		}
		stale, err := s.Group(ctx, g.ID) // what a task read before the resume
		if err != nil {
			t.Fatal(err)
		}
		if err := ResumeGroup(ctx, s, nil, g.ID, nil, TaskOptions{}); err != nil {
			t.Fatal(err)
		}
		resume()
		haltFor(t, s, stale, StateRunning) // read before the lift
		if ok, err := s.HaltGroup(ctx, g.ID, "rotation-wide error budget exceeded"); err != nil || !ok {
			t.Fatalf("halt the group again: %v %v", ok, err)
		}
		halt(StateFailed) // a halt after the part's resume
		resume()          // the part alone, the group still halted
		halt(StateFailed)
	})
}

// haltFor halts part g.1 for g's halt as watchGroup does and checks the
// part's state after.
func haltFor(t *testing.T, s *Store, g *Group, want State) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.HaltForGroup(ctx, "g.1", groupHaltPrefix+g.Halted, g.Lifts); err != nil {
		t.Fatal(err)
	}
	rot, err := s.Rotation(ctx, "g.1")
	if err != nil {
		t.Fatal(err)
	}
	if rot.State != want {
		t.Fatalf("part %s after a halt of the group read at %d lifts: want %s", rot.State, g.Lifts, want)
	}
}

func TestGroupHaltPrefixLen(t *testing.T) {
	if strconv.Itoa(len(groupHaltPrefix)) != groupHaltPrefixLen {
		t.Fatalf("groupHaltPrefixLen %s, want %d: finishLua compares that many bytes", groupHaltPrefixLen, len(groupHaltPrefix))
	}
}

func TestGroupSummary(t *testing.T) {
	end := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	part := func(id string, st State, failed int64) *Rotation {
		return &Rotation{ID: id, Region: "r-" + id, State: st, Keypair: "kp", FinishedAt: end,
			Counts: Counts{Total: 10, Succeeded: 10 - failed, Failed: failed}}
	}
	for _, tc := range []struct {
		name      string
		maxErrors int
		parts     []*Rotation
		want      State
		reason    string
	}{
		{"all succeeded", -1, []*Rotation{part("1", StateSucceeded, 0), part("2", StateSucceeded, 0)}, StateSucceeded, ""},
		{"one with errors", -1, []*Rotation{part("1", StateSucceeded, 0), part("2", StateCompletedWithErrors, 2)}, StateCompletedWithErrors, ""},
		{"one failed", -1, []*Rotation{part("1", StateFailed, 5), part("2", StateCancelled, 0)}, StateFailed, "part 1"},
		{"past the whole's budget", 3, []*Rotation{part("1", StateCompletedWithErrors, 2), part("2", StateCompletedWithErrors, 2)}, StateFailed, "4 failed > max 3"},
		{"within it", 4, []*Rotation{part("1", StateCompletedWithErrors, 2), part("2", StateCompletedWithErrors, 2)}, StateCompletedWithErrors, ""},
		{"cancelled", -1, []*Rotation{part("1", StateSucceeded, 0), part("2", StateCancelled, 0)}, StateCancelled, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := GroupSummary(&Group{ID: "g", MaxErrors: tc.maxErrors}, tc.parts)
			if s.State != tc.want || !strings.Contains(s.Reason, tc.reason) || tc.reason == "" && s.Reason != "" {
				t.Errorf("state %s reason %q, want %s with %q", s.State, s.Reason, tc.want, tc.reason)
			}
			if s.Counts.Total != 20 || len(s.Parts) != 2 || s.Parts[1].Region != "r-2" || !s.FinishedAt.Equal(end) || s.Rotation != "g" {
				t.Errorf("summary %+v: want the parts summed and named", s)
			}
		})
	}
}
