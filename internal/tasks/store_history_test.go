package tasks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// want is a history entry as a test expects it: its kind and actor, and
// text its detail holds.
type want struct {
	kind   HistoryKind
	actor  string
	detail string
}

func checkHistory(t *testing.T, s *Store, id string, wants ...want) {
	t.Helper()
	got, err := s.History(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, e := range got {
		lines = append(lines, fmt.Sprintf("%d %s %q %q", e.Seq, e.Kind, e.Actor, e.Detail))
	}
	if len(got) != len(wants) {
		t.Fatalf("history:\n%s\nwant %d entries %v", strings.Join(lines, "\n"), len(wants), wants)
	}
	for i, w := range wants {
		e := got[i]
		if e.Kind != w.kind || e.Actor != w.actor || !strings.Contains(e.Detail, w.detail) || e.Seq != int64(i+1) || e.At.IsZero() {
			t.Fatalf("history:\n%s\nentry %d: want %v", strings.Join(lines, "\n"), i+1, w)
		}
	}
}

// TestHistoryKinds: each change that makes an entry makes exactly one,
// with its actor and figures, however often the step that makes it runs
// again (a task retried, a control repeated, two ticks racing).
func TestHistoryKinds(t *testing.T) {
	created := want{HistoryCreated, "alice", "4 servers to keypair kp-new in 2 chunks, 2 waves; max errors 1"}
	tests := []struct {
		name  string
		steps func(t *testing.T, s *Store, id string)
		want  []want
	}{
		{"created and imported", func(t *testing.T, s *Store, id string) {}, []want{created,
			{HistoryKeypairImported, "alice", "keypair kp-new imported into KPS in 2 projects: cn-north-4/p1, cn-east-3/p2"}}},
		{"wave started once", func(t *testing.T, s *Store, id string) {
			for range 2 {
				if err := s.Queued(context.Background(), id, 1, 1); err != nil {
					t.Fatal(err)
				}
			}
		}, []want{created, {HistoryWaveStarted, SystemActor, "wave 1 of 2: 2 servers"}}},
		{"paused and resumed by their actors", func(t *testing.T, s *Store, id string) {
			ctx := context.Background()
			for range 2 {
				if err := s.SetState(ctx, id, StatePaused, reasonPaused, "bob"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Resume(ctx, id, -1, "carol", -1); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Resume(ctx, id, -1, "carol", -1); err != nil {
				t.Fatal(err) // running already: nothing to say
			}
		}, []want{created, {HistoryPaused, "bob", "was running"}, {HistoryResumed, "carol", "was paused"}}},
		{"halted by the budget, resumed with a new one", func(t *testing.T, s *Store, id string) {
			ctx := context.Background()
			checkpoint(t, s, id, 1, "s0", "s1")
			for range 2 {
				if _, err := s.Resolve(ctx, id, 1, 1, outcomes(OutcomeFailed, "s0", "s1"), time.Time{}, false, time.Now()); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := s.Resume(ctx, id, 3, "carol", -1); err != nil {
				t.Fatal(err)
			}
		}, []want{created, {HistoryHaltedBudget, SystemActor, "2 failed > max 1 in wave 1 of 2; 0 succeeded, 0 running, 2 pending of 4"},
			{HistoryResumed, "carol", "was failed; max errors 1 -> 3 (2 failed)"}}},
		{"halted by refused credentials once", func(t *testing.T, s *Store, id string) {
			for range 2 {
				if _, err := s.Halt(context.Background(), id, "ListJobs answered 401: the credentials were refused", true); err != nil {
					t.Fatal(err)
				}
			}
		}, []want{created, {HistoryHalted, SystemActor, "ListJobs answered 401"}}},
		{"cancelled once, and finished", func(t *testing.T, s *Store, id string) {
			for range 2 {
				if _, _, err := s.Cancel(context.Background(), id, "dave", time.Now()); err != nil {
					t.Fatal(err)
				}
			}
		}, []want{created, {HistoryCancelled, "dave", "was running"},
			{HistoryFinished, SystemActor, "cancelled: 0 succeeded, 0 failed, 0 skipped, 4 cancelled of 4"}}},
		{"paused after a wave, finished once", func(t *testing.T, s *Store, id string) {
			ctx := context.Background()
			checkpoint(t, s, id, 1, "s0", "s1")
			checkpoint(t, s, id, 2, "s2", "s3")
			resolve := func(n int, w int, ids ...string) {
				for range 2 {
					if _, err := s.Resolve(ctx, id, n, w, outcomes(OutcomeSucceeded, ids...), time.Time{}, false, time.Now()); err != nil {
						t.Fatal(err)
					}
				}
			}
			resolve(1, 1, "s0", "s1")
			resolve(2, 2, "s2", "s3")
			if _, err := s.finishIfDone(ctx, id, time.Now()); err != nil {
				t.Fatal(err)
			}
		}, []want{created, {HistoryPaused, SystemActor, "wave 1 of 2 finished; paused after the wave: resume to start wave 2 (0 failed so far)"},
			{HistoryFinished, SystemActor, "succeeded: 4 succeeded, 0 failed, 0 skipped, 0 cancelled of 4"}}},
		{"added once with a key", func(t *testing.T, s *Store, id string) {
			e := HistoryEntry{Kind: HistoryKeypairRetired, Actor: "erin", Detail: "kp-old deleted in p1", Once: "retire"}
			for i := range 2 {
				added, err := s.AddHistory(context.Background(), id, e)
				if err != nil || added != (i == 0) {
					t.Fatalf("AddHistory #%d = %v, %v", i+1, added, err)
				}
			}
		}, []want{created, {HistoryKeypairRetired, "erin", "kp-old deleted in p1"}}},
	}
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		for i, tt := range tests {
			id := fmt.Sprintf("r%d", i)
			t.Run(tt.name, func(t *testing.T) {
				s := NewStore(r.Client(t), "")
				chunks := [][]Entry{entries("s0", "s1"), entries("s2", "s3")}
				rot := testRotation(id, chunks)
				rot.Waves, rot.MaxErrors, rot.PauseAfterWave = []Wave{{1, 2}, {2, 2}}, 1, strings.Contains(tt.name, "after a wave")
				rot.actor = "alice"
				want := tt.want
				if tt.name == "created and imported" {
					rot.imported = "keypair kp-new imported into KPS in 2 projects: cn-north-4/p1, cn-east-3/p2"
				}
				for range 2 {
					if _, err := s.Create(context.Background(), rot, chunks, nil, time.Now()); err != nil {
						t.Fatal(err)
					}
				}
				tt.steps(t, s, id)
				checkHistory(t, s, id, want...)
			})
		}
	})
}

// TestHistoryCapKeepsFirstAndLast: past HistoryMax entries, the first
// HistoryHead stay and the oldest of the others go.
func TestHistoryCapKeepsFirstAndLast(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		controlled(t, s, "r1", []int{1}, []Wave{{1, 1}}, 0, false)
		const total = HistoryMax + 37
		for i := 2; i <= total; i++ {
			if _, err := s.AddHistory(ctx, "r1", HistoryEntry{Kind: HistoryPaused, Detail: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
		got, err := s.History(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != HistoryMax {
			t.Fatalf("%d entries, want %d", len(got), HistoryMax)
		}
		for i, e := range got {
			want := int64(i + 1)
			if i >= HistoryHead {
				want = int64(total - HistoryMax + i + 1)
			}
			if e.Seq != want {
				t.Fatalf("entry %d is #%d, want #%d", i, e.Seq, want)
			}
		}
		if got[0].Kind != HistoryCreated {
			t.Fatalf("first entry %+v, want the creation", got[0])
		}
	})
}

// TestHistoryRetention: the history expires with the rotation, an entry
// added after its retention was set too; a rotation that does not exist
// gets none.
func TestHistoryRetention(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		rdb := r.Client(t)
		s := NewStore(rdb, "ns1")
		if _, err := s.Create(ctx, testRotation("r1", nil), nil, entries("a"), time.Now()); err != nil {
			t.Fatal(err)
		}
		if err := s.Expire(ctx, mustRotation(t, s, "r1"), time.Hour); err != nil {
			t.Fatal(err)
		}
		key := "cph-rekey.ns1:{r1}:hist"
		if _, err := s.AddHistory(ctx, "r1", HistoryEntry{Kind: HistoryKeypairRetired}); err != nil {
			t.Fatal(err)
		}
		if ttl := rdb.TTL(ctx, key).Val(); ttl <= 0 || ttl > time.Hour {
			t.Fatalf("history TTL %s, want the rotation's hour", ttl)
		}
		checkHistory(t, s, "r1", want{HistoryCreated, "", "0 servers"}, want{HistoryFinished, SystemActor, "succeeded: 0 succeeded, 0 failed, 1 skipped"},
			want{HistoryKeypairRetired, "", ""})
		if _, err := s.AddHistory(ctx, "gone", HistoryEntry{Kind: HistoryKeypairRetired}); !errors.Is(err, ErrNotFound) {
			t.Fatalf("AddHistory of no rotation: %v, want ErrNotFound", err)
		}
		if n := rdb.Exists(ctx, "cph-rekey.ns1:{gone}:hist").Val(); n != 0 {
			t.Fatal("a history was written for a rotation that does not exist")
		}
		if _, err := s.History(ctx, "gone"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("History of no rotation: %v, want ErrNotFound", err)
		}
	})
}

func TestValidateActor(t *testing.T) {
	tests := []struct {
		actor string
		ok    bool
	}{
		{"", true},
		{"alice", true},
		{"Ana Müller (console)", true},
		{strings.Repeat("a", MaxActorLen), true},
		{strings.Repeat("a", MaxActorLen+1), false},
		{"bob\nfinished", false},
		{"tab\there", false},
		{"esc\x1b[31m", false},
		{"bad\xffutf8", false},
	}
	for _, tt := range tests {
		if err := ValidateActor(tt.actor); (err == nil) != tt.ok {
			t.Errorf("ValidateActor(%q) = %v, want ok %v", tt.actor, err, tt.ok)
		}
	}
}
