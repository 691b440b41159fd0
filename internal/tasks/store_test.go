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
	r := &Rotation{ID: id, Keypair: "kp-new", ChunkSize: 2, Chunks: len(chunks), MaxAttempts: 3, Fingerprint: "fp-" + id}
	n := 0
	for _, c := range chunks {
		n += len(c)
	}
	if n > 0 {
		r.Waves = []Wave{{LastChunk: len(chunks), Servers: n}}
	}
	return r
}

func entries(ids ...string) []Entry {
	es := make([]Entry, len(ids))
	for i, id := range ids {
		es[i] = Entry{ServerID: id, OldKeypair: "kp-old", Keypair: "kp-new", Attempt: 1, Pos: i}
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
		rot := testRotation("r1", chunks)
		rot.Positions, rot.MaxErrors = true, 5
		if _, err := s.Create(ctx, rot, chunks, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
		jobs := map[string]string{"a": "job-a", "b": "job-b"}
		errs := map[string][2]string{"c": {"CPS.0016", "server_id is invalid."}}
		now := time.Now()
		for i, want := range []Checkpointed{{First: true, Tick: 1}, {}} {
			cp, err := s.Checkpoint(ctx, "r1", 1, 3, "req-1", jobs, errs, now, now.Add(3*time.Second))
			if err != nil || cp != want {
				t.Fatalf("Checkpoint #%d = %+v, %v; want %+v", i+1, cp, err, want)
			}
		}
		b, err := s.Batch(ctx, "r1", 1)
		if err != nil {
			t.Fatal(err)
		}
		if !b.Checkpointed || b.RequestID != "req-1" || b.Jobs["a"] != "job-a" || b.Errors["c"][0] != "CPS.0016" || b.TickGen != 1 {
			t.Fatalf("batch = %+v", b)
		}
		if got := mustRotation(t, s, "r1").Counts; got.Pending != 0 || got.Running != 3 || got.Submitted != 3 {
			t.Fatalf("counts after checkpoint = %+v", got)
		}
		if due, _, _, _ := s.DuePolls(ctx, "r1", now.Add(2*time.Second), now.Add(2*time.Second), 10); len(due) != 0 {
			t.Fatalf("due polls before the first poll: %v", due)
		}
		if due, _, _, _ := s.DuePolls(ctx, "r1", now.Add(4*time.Second), now.Add(4*time.Second), 10); len(due) != 1 || due[0] != 1 {
			t.Fatalf("due polls after the first poll: %v, want [1]", due)
		}

		// Ten racing ticks resolve the same servers: each is recorded once.
		es := chunks[0]
		retry := es[1]
		retry.Attempt = 2
		rs := []Resolution{
			{ServerID: "a", Verify: true, JobID: "job-a", Attempts: 1, Entry: es[0]},
			{ServerID: "b", Retry: &retry, RetryAt: now, Attempts: 1, Entry: es[1]},
			{ServerID: "c", Outcome: OutcomeFailed, Code: "CPS.0016", Message: "server_id is invalid.", Attempts: 1, Entry: es[2]},
		}
		var wg sync.WaitGroup
		results := make([]Resolved, 10)
		for i := range results {
			wg.Go(func() {
				res, err := s.Resolve(ctx, "r1", 1, 1, rs, time.Time{}, false, now)
				if err != nil {
					t.Error(err)
				}
				results[i] = res
			})
		}
		wg.Wait()
		recorded := 0
		for _, res := range results {
			recorded += res.Recorded
			if res.Complete {
				t.Errorf("batch complete with a server still verifying")
			}
		}
		if recorded != 3 {
			t.Fatalf("recorded %d, want 3", recorded)
		}
		c := mustRotation(t, s, "r1").Counts
		if want := (Counts{Total: 3, Pending: 1, Running: 1, Verifying: 1, Failed: 1, Submitted: 3, Retried: 1}); c != want {
			t.Fatalf("counts = %+v, want %+v", c, want)
		}
		pend, pages, err := s.Verifying(ctx, "r1", 1, 10)
		if err != nil || len(pend) != 1 || pend[0].ServerID != "a" || pend[0].Pos != 0 || pend[0].Batch != 1 {
			t.Fatalf("verifying = %+v, %v", pend, err)
		}
		if want := (InFlight{First: 0, Retried: 1}); pages[0] != want {
			t.Fatalf("page 0 has %+v targets in flight, want %+v (b, in the retry pool, no first attempt)", pages[0], want)
		}

		// b is gathered into retry batch 2, submitted, and succeeds there.
		if k, err := s.FormBatch(ctx, "r1", 3, 2, true, now); err != nil || k != -1 {
			t.Fatalf("FormBatch with a wrong number = %d, %v; want -1", k, err)
		}
		if k, err := s.FormBatch(ctx, "r1", 2, 2, false, now); err != nil || k != 0 {
			t.Fatalf("FormBatch of a short batch, not forced = %d, %v; want 0", k, err)
		}
		if k, err := s.FormBatch(ctx, "r1", 2, 2, true, now); err != nil || k != 1 {
			t.Fatalf("FormBatch forced = %d, %v; want 1", k, err)
		}
		if fresh, _ := s.Fresh(ctx, "r1"); len(fresh) != 1 || fresh[0] != 2 {
			t.Fatalf("fresh = %v, want [2]", fresh)
		}
		b2, err := s.Batch(ctx, "r1", 2)
		if err != nil || len(b2.Servers) != 1 || b2.Servers[0] != retry {
			t.Fatalf("retry batch = %+v, %v; want b at attempt 2", b2, err)
		}
		if cp, err := s.Checkpoint(ctx, "r1", 2, 1, "req-2", map[string]string{"b": "job-b2"}, nil, now, now.Add(3*time.Second)); err != nil || !cp.First || cp.Tick != 0 {
			t.Fatalf("Checkpoint of the retry batch = %+v, %v; want first, the chain alive and due in time", cp, err)
		}
		if fresh, _ := s.Fresh(ctx, "r1"); len(fresh) != 0 {
			t.Fatalf("fresh after its checkpoint = %v", fresh)
		}
		final := []Resolution{{ServerID: "b", Outcome: OutcomeSucceeded, JobID: "job-b2", Attempts: 2, Entry: retry}}
		if res, err := s.Resolve(ctx, "r1", 2, 1, final, time.Time{}, false, now); err != nil || !res.Complete || res.Finished {
			t.Fatalf("Resolve of the retry = %+v, %v; want complete, not finished (a still verifying)", res, err)
		}
		if _, pages, _ := s.Verifying(ctx, "r1", 1, 10); pages[0] != (InFlight{}) {
			t.Fatalf("page 0 after the retry ended: %+v in flight, want none", pages[0])
		}

		// a is verified last, and that finishes the rotation, once.
		v := []Resolution{verified(pend[0], OutcomeSucceeded, "", "")}
		res, err := s.Resolve(ctx, "r1", 1, 1, v, time.Time{}, true, now)
		if err != nil || !res.Complete || !res.Finished {
			t.Fatalf("verification Resolve = %+v, %v; want complete and finished", res, err)
		}
		if res, _ := s.Resolve(ctx, "r1", 1, 1, v, time.Time{}, true, now); res.Finished || res.Recorded != 0 {
			t.Fatalf("repeated Resolve = %+v; want nothing new", res)
		}
		if pend, _, _ := s.Verifying(ctx, "r1", 1, 10); len(pend) != 0 {
			t.Fatalf("verification set after verifying: %+v", pend)
		}
		rot = mustRotation(t, s, "r1")
		if rot.State != StateCompletedWithErrors || !rot.Finished() || rot.Counts.Succeeded != 2 || rot.Counts.Verifying != 0 {
			t.Fatalf("rotation = %+v; want completed with errors (one server failed), finished", rot)
		}
		if next, _ := s.NextTick(ctx, "r1", 1, now, now); !next.IsZero() {
			t.Fatal("the tick chain goes on with nothing in flight")
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
		s.Checkpoint(ctx, "r1", 1, 2, "req-1", map[string]string{"a": "job-a", "b": "job-b"}, nil, time.Now(), time.Now())
		s.Resolve(ctx, "r1", 1, 1, []Resolution{{ServerID: "a", Outcome: OutcomeFailed, JobID: "job-a", Code: "CPS.9", Message: "tab\there", Attempts: 1}}, time.Time{}, false, time.Now())

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
			err := s.SetState(ctx, "r1", st.to, "", "test")
			if (err != nil) != st.wantErr {
				t.Fatalf("SetState(%s) = %v, want error %v", st.to, err, st.wantErr)
			}
		}
		if err := s.SetState(ctx, "missing", StatePaused, "", "test"); !errors.Is(err, ErrNotFound) {
			t.Fatalf("SetState on a missing rotation: %v", err)
		}
	})
}

func TestEncodeRecordRoundTrip(t *testing.T) {
	in := record{Outcome: OutcomeFailed, Attempts: 3, Batch: 7, JobID: "j", Code: "CPS.1", Message: "a\tb\nc", FinishedAt: time.Unix(1700000000, 0).UTC()}
	out, err := decodeRecord(encodeRecord(in))
	if err != nil {
		t.Fatal(err)
	}
	in.Message = "a b c"
	if fmt.Sprint(out) != fmt.Sprint(in) {
		t.Fatalf("round trip: %+v, want %+v", out, in)
	}
}

// TestTickChainWakes: a checkpoint starts a chain when none is alive, and
// supersedes one whose next tick is scheduled later than the new batch's
// first poll; a running tick, or one due in time, is left alone.
func TestTickChainWakes(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		chunks := [][]Entry{entries("a"), entries("b"), entries("c"), entries("d")}
		if _, err := s.Create(ctx, testRotation("r1", chunks), chunks, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		cp := func(n int, firstPoll time.Time) int {
			t.Helper()
			c, err := s.Checkpoint(ctx, "r1", n, 1, "req", map[string]string{chunks[n-1][0].ServerID: "job"}, nil, now, firstPoll)
			if err != nil || !c.First {
				t.Fatalf("Checkpoint %d = %+v, %v", n, c, err)
			}
			return c.Tick
		}
		if g := cp(1, now.Add(40*time.Second)); g != 1 {
			t.Fatalf("first checkpoint started chain %d, want 1", g)
		}
		if g := cp(2, now.Add(40*time.Second)); g != 0 {
			t.Fatalf("a checkpoint due with the scheduled tick started chain %d", g)
		}
		// The chain's next tick is 30 s away; a batch due in 3 s supersedes it.
		if next, err := s.NextTick(ctx, "r1", 1, now.Add(30*time.Second), now); err != nil || next.UnixMilli() != now.Add(30*time.Second).UnixMilli() {
			t.Fatalf("NextTick = %v, %v; want in 30 s (the polls are due in 40 s)", next, err)
		}
		if g := cp(3, now.Add(3*time.Second)); g != 2 {
			t.Fatalf("checkpoint before a late tick started chain %d, want 2", g)
		}
		// A tick that ends schedules its successor no later than the first
		// poll due, even one checkpointed while it ran.
		if next, err := s.NextTick(ctx, "r1", 2, now.Add(time.Minute), now); err != nil || next.UnixMilli() != now.Add(3*time.Second).UnixMilli() {
			t.Fatalf("NextTick = %v, %v; want at batch 3's first poll, in 3 s", next, err)
		}
		if ok, _ := s.ClaimTick(ctx, "r1", 1, 2, now.Add(time.Minute)); ok {
			t.Fatal("a tick of the superseded chain may run")
		}
		// While a tick runs, it picks up new batches itself.
		if ok, err := s.ClaimTick(ctx, "r1", 2, 1, now.Add(time.Minute)); err != nil || !ok {
			t.Fatalf("ClaimTick = %v, %v", ok, err)
		}
		if g := cp(4, now.Add(3*time.Second)); g != 0 {
			t.Fatalf("checkpoint during a running tick started chain %d", g)
		}
	})
}
