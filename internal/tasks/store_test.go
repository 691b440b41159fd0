package tasks

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

func testRotation(id string, chunks [][]Entry) *Rotation {
	return &Rotation{ID: id, Keypair: "kp-new", ChunkSize: 2, Chunks: len(chunks), MaxAttempts: 3, Fingerprint: "fp-" + id}
}

func entries(ids ...string) []Entry {
	es := make([]Entry, len(ids))
	for i, id := range ids {
		es[i] = Entry{ServerID: id, OldKeypair: "kp-old", Keypair: "kp-new"}
	}
	return es
}

func mustRotation(t *testing.T, s *Store, id string) *Rotation {
	t.Helper()
	r, err := s.Rotation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestStoreCreateIsIdempotent(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		chunks := [][]Entry{entries("a", "b"), entries("c")}
		rot := testRotation("r1", chunks)
		now := time.Now()
		created, err := s.Create(ctx, rot, chunks, entries("z"), now)
		if err != nil || !created {
			t.Fatalf("Create = %v, %v; want created", created, err)
		}
		created, err = s.Create(ctx, rot, chunks, entries("z"), now)
		if err != nil || created {
			t.Fatalf("re-Create = %v, %v; want existing, no error", created, err)
		}
		other := *rot
		other.Fingerprint = "something else"
		if _, err := s.Create(ctx, &other, chunks, nil, now); !errors.Is(err, ErrConflict) {
			t.Fatalf("Create with another fingerprint: %v, want ErrConflict", err)
		}
		got := mustRotation(t, s, "r1")
		want := Counts{Total: 4, Pending: 3, Skipped: 1}
		if got.Counts != want || got.State != StateRunning || got.Chunks != 2 {
			t.Fatalf("rotation = %+v, want counts %+v", got, want)
		}
		if _, err := s.Rotation(ctx, "nope"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("missing rotation: %v", err)
		}
	})
}

func TestStoreAllSkippedFinishesAtOnce(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		s := NewStore(r.Client(t), "")
		if _, err := s.Create(context.Background(), testRotation("r1", nil), nil, entries("a", "b"), time.Now()); err != nil {
			t.Fatal(err)
		}
		if got := mustRotation(t, s, "r1"); !got.Finished() || got.State != StateSucceeded || got.Counts.Skipped != 2 {
			t.Fatalf("rotation = %+v, want finished, succeeded, 2 skipped", got)
		}
	})
}

func TestStoreCheckpointAndResolveExactlyOnce(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		chunks := [][]Entry{entries("a", "b", "c")}
		if _, err := s.Create(ctx, testRotation("r1", chunks), chunks, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
		jobs := map[string]string{"a": "job-a", "b": "job-b"}
		errs := map[string][2]string{"c": {"CPS.0016", "server_id is invalid."}}
		for i, want := range []bool{true, false} {
			ok, err := s.Checkpoint(ctx, "r1", 1, 1, 3, "req-1", jobs, errs, time.Now())
			if err != nil || ok != want {
				t.Fatalf("Checkpoint #%d = %v, %v; want %v", i+1, ok, err, want)
			}
		}
		a, err := s.Attempt(ctx, "r1", 1, 1)
		if err != nil {
			t.Fatal(err)
		}
		if !a.Checkpointed || a.RequestID != "req-1" || a.Jobs["a"] != "job-a" || a.Errors["c"][0] != "CPS.0016" {
			t.Fatalf("attempt = %+v", a)
		}
		if got := mustRotation(t, s, "r1").Counts; got.Pending != 0 || got.Running != 3 || got.Submitted != 3 {
			t.Fatalf("counts after checkpoint = %+v", got)
		}

		// Ten racing pollers resolve the same servers: each is recorded once.
		rs := []Resolution{
			{ServerID: "a", Outcome: OutcomeSucceeded, JobID: "job-a", Attempts: 1},
			{ServerID: "b", Retry: &Entry{ServerID: "b", OldKeypair: "kp-old", Keypair: "kp-new"}},
			{ServerID: "c", Outcome: OutcomeFailed, Code: "CPS.0016", Message: "server_id is invalid.", Attempts: 1},
		}
		var wg sync.WaitGroup
		results := make([]Resolved, 10)
		for i := range results {
			wg.Go(func() {
				res, err := s.Resolve(ctx, "r1", 1, 1, rs, time.Now())
				if err != nil {
					t.Error(err)
				}
				results[i] = res
			})
		}
		wg.Wait()
		recorded, complete := 0, 0
		for _, res := range results {
			recorded += res.Recorded
			if res.Complete {
				complete++
				if res.Retries != 1 {
					t.Errorf("complete with %d retries, want 1", res.Retries)
				}
			}
		}
		if recorded != 3 || complete != 1 {
			t.Fatalf("recorded %d, completed %d times; want 3 and 1", recorded, complete)
		}
		c := mustRotation(t, s, "r1").Counts
		if want := (Counts{Total: 3, Pending: 1, Succeeded: 1, Failed: 1, Submitted: 3, Retried: 1}); c != want {
			t.Fatalf("counts = %+v, want %+v", c, want)
		}
		next, err := s.Attempt(ctx, "r1", 1, 2)
		if err != nil || len(next.Servers) != 1 || next.Servers[0].ServerID != "b" || next.Servers[0].OldKeypair != "kp-old" {
			t.Fatalf("next attempt = %+v, %v", next, err)
		}

		// The retried server succeeds in attempt 2 and the rotation finishes once.
		if _, err := s.Checkpoint(ctx, "r1", 1, 2, 1, "req-2", map[string]string{"b": "job-b2"}, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
		final := []Resolution{{ServerID: "b", Outcome: OutcomeSucceeded, JobID: "job-b2", Attempts: 2}}
		res, err := s.Resolve(ctx, "r1", 1, 2, final, time.Now())
		if err != nil || !res.Complete || !res.Finished {
			t.Fatalf("last Resolve = %+v, %v; want complete and finished", res, err)
		}
		if res, _ := s.Resolve(ctx, "r1", 1, 2, final, time.Now()); res.Finished || res.Recorded != 0 {
			t.Fatalf("repeated last Resolve = %+v; want nothing new", res)
		}
		rot := mustRotation(t, s, "r1")
		if rot.State != StateFailed || !rot.Finished() || rot.Counts.Succeeded != 2 {
			t.Fatalf("rotation = %+v; want failed (one server failed), finished", rot)
		}
	})
}

func TestStoreReport(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		chunks := [][]Entry{entries("a", "b"), entries("c")}
		if _, err := s.Create(ctx, testRotation("r1", chunks), chunks, entries("z"), time.Now()); err != nil {
			t.Fatal(err)
		}
		s.Checkpoint(ctx, "r1", 1, 1, 2, "req-1", map[string]string{"a": "job-a", "b": "job-b"}, nil, time.Now())
		s.Resolve(ctx, "r1", 1, 1, []Resolution{{ServerID: "a", Outcome: OutcomeFailed, JobID: "job-a", Code: "CPS.9", Message: "tab\there", Attempts: 1}}, time.Now())

		var b strings.Builder
		if err := s.WriteReportCSV(ctx, "r1", &b); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(b.String()), "\n")
		if len(lines) != 5 {
			t.Fatalf("report has %d lines, want header + 4:\n%s", len(lines), b.String())
		}
		want := map[string]string{
			"z": "z,kp-old,kp-new,,,0,skipped,,,",
			"a": "a,kp-old,kp-new,req-1,job-a,1,failed,CPS.9,tab here,",
			"b": "b,kp-old,kp-new,req-1,job-b,1,running,,,",
			"c": "c,kp-old,kp-new,,,1,pending,,,",
		}
		for _, l := range lines[1:] {
			id, _, _ := strings.Cut(l, ",")
			if !strings.HasPrefix(l, want[id]) {
				t.Errorf("row %q\nwant prefix %q", l, want[id])
			}
		}
		var j strings.Builder
		if err := s.WriteReportJSON(ctx, "r1", &j); err != nil || !strings.HasPrefix(j.String(), `[{"server_id":"z"`) {
			t.Fatalf("JSON report %q, %v", j.String(), err)
		}
	})
}

func TestStoreSetState(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		chunks := [][]Entry{entries("a")}
		s.Create(ctx, testRotation("r1", chunks), chunks, nil, time.Now())
		steps := []struct {
			to      State
			wantErr bool
		}{
			{StatePaused, false}, {StateRunning, false}, {StateCancelled, false}, {StateRunning, true}, {StateSucceeded, true},
		}
		for _, st := range steps {
			err := s.SetState(ctx, "r1", st.to, "")
			if (err != nil) != st.wantErr {
				t.Fatalf("SetState(%s) = %v, want error %v", st.to, err, st.wantErr)
			}
		}
		if err := s.SetState(ctx, "missing", StatePaused, ""); !errors.Is(err, ErrNotFound) {
			t.Fatalf("SetState on a missing rotation: %v", err)
		}
	})
}

func TestEncodeRecordRoundTrip(t *testing.T) {
	in := record{Outcome: OutcomeFailed, Attempts: 3, JobID: "j", Code: "CPS.1", Message: "a\tb\nc", FinishedAt: time.Unix(1700000000, 0).UTC()}
	out, err := decodeRecord(encodeRecord(in))
	if err != nil {
		t.Fatal(err)
	}
	in.Message = "a b c"
	if fmt.Sprint(out) != fmt.Sprint(in) {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
}
