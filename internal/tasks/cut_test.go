package tasks

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// errCut is what a cut connection answers.
var errCut = errors.New("injected: connection cut")

// cutHook is a go-redis hook that lets the first n round trips (a command
// or a pipeline each) through and fails every one after them, as a
// connection lost in the middle of a control would: whatever the control
// wrote before the cut stays written.
type cutHook struct{ left atomic.Int64 }

func newCutHook(n int) *cutHook {
	h := &cutHook{}
	h.left.Store(int64(n))
	return h
}

func (h *cutHook) cut() bool { return h.left.Add(-1) < 0 }

func (h *cutHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (h *cutHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.cut() {
			cmd.SetErr(errCut)
			return errCut
		}
		return next(ctx, cmd)
	}
}

func (h *cutHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.cut() {
			for _, c := range cmds {
				c.SetErr(errCut)
			}
			return errCut
		}
		return next(ctx, cmds)
	}
}

// cutClient returns a client of r cut after n round trips.
func cutClient(t *testing.T, r *testredis.Redis, n int) *redis.Client {
	t.Helper()
	c := r.Client(t)
	c.AddHook(newCutHook(n))
	return c
}

// flushDB empties r's database for the next trial.
func flushDB(t *testing.T, r *testredis.Redis) {
	t.Helper()
	if err := r.Client(t).FlushDB(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// finishedEvents counts the completion events enqueued for rotation id.
func finishedEvents(t *testing.T, rdb redis.UniversalClient, id string) int {
	t.Helper()
	ins := asynq.NewInspectorFromRedisClient(rdb)
	tasks, err := ins.ListPendingTasks(QueueEvents, asynq.PageSize(100))
	if err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
		t.Fatal(err)
	}
	n := 0
	for _, ti := range tasks {
		if ti.ID == FinishedTaskID(id) {
			n++
		}
	}
	return n
}

// reportOnce checks that every one of total servers is in the report of
// rotation id exactly once, in a terminal outcome.
func reportOnce(t *testing.T, s *Store, id string, total int) {
	t.Helper()
	seen := map[string]int{}
	err := s.Report(context.Background(), id, func(row ReportRow) error {
		seen[row.ServerID]++
		switch row.Outcome {
		case OutcomePending, OutcomeRunning:
			t.Errorf("server %s is %s in the report of a finished rotation", row.ServerID, row.Outcome)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != total {
		t.Errorf("report has %d servers, want %d", len(seen), total)
	}
	for sid, n := range seen {
		if n != 1 {
			t.Errorf("server %s is %d times in the report", sid, n)
		}
	}
}

// TestCancelCutShortIsRunAgain cuts a cancel's connection after each of
// its round trips (writes and the reads between them), then cancels again
// on a sound one, or lets the watchdog find it: the rotation ends
// cancelled with every server reported once and one completion event,
// though its third wave was never enqueued and its closing takes three
// scripts.
func TestCancelCutShortIsRunAgain(t *testing.T) {
	finishers := []struct {
		name string
		// watches: the finisher takes up only rotations the cut cancel
		// set cancelled.
		watches bool
		run     func(ctx context.Context, s *Store, enq Enqueuer, id string) error
	}{
		{"cancel again", false, func(ctx context.Context, s *Store, enq Enqueuer, id string) error {
			_, _, err := Cancel(ctx, s, enq, id, "test", TaskOptions{}, time.Now())
			return err
		}},
		{"watchdog", true, func(ctx context.Context, s *Store, enq Enqueuer, id string) error {
			h := NewHandler(HandlerOptions{Store: s, Enqueuer: enq, Limiter: nopLimiter{}})
			return h.HandleWatchdog(ctx, asynq.NewTask(TypeWatchdog, nil))
		}},
	}
	for _, f := range finishers {
		t.Run(f.name, func(t *testing.T) {
			testredis.Each(t, func(t *testing.T, r *testredis.Redis) { cancelCutShort(t, r, f.watches, f.run) })
		})
	}
}

func cancelCutShort(t *testing.T, r *testredis.Redis, watches bool, finisher func(ctx context.Context, s *Store, enq Enqueuer, id string) error) {
	ctx := context.Background()
	const chunks, id = 250, "r1"
	sizes := make([]int, chunks)
	for i := range sizes {
		sizes[i] = 2
	}
	waves := []Wave{{1, 2}, {100, 200}, {chunks, 2 * chunks}}
	for n := 0; ; n++ {
		flushDB(t, r)
		s := NewStore(r.Client(t), "")
		controlled(t, s, id, sizes, waves, 10, false)
		// Chunk 1 was submitted: one server succeeded, the other waits
		// in the retry pool, which the cancel must drain.
		checkpoint(t, s, id, 1, "s0", "s1")
		retry := Resolution{ServerID: "s0", Retry: &Entry{ServerID: "s0", Keypair: "kp-new", Attempt: 2, Pos: -1}, Attempts: 1,
			RetryAt: time.Now().Add(time.Minute)}
		if _, err := s.Resolve(ctx, id, 1, 1, append([]Resolution{retry}, outcomes(OutcomeSucceeded, "s1")...), time.Time{}, false, time.Now()); err != nil {
			t.Fatal(err)
		}

		cut := cutClient(t, r, n)
		_, _, cutErr := Cancel(ctx, NewStore(cut, ""), asynq.NewClientFromRedisClient(cut), id, "test", TaskOptions{}, time.Now())
		// asynq does not wrap its Redis errors: the cut is known by its text.
		if cutErr != nil && !strings.Contains(cutErr.Error(), errCut.Error()) {
			t.Fatalf("cut after %d round trips: Cancel: %v; want the cut's error", n, cutErr)
		}

		if watches && mustRotation(t, s, id).State != StateCancelled {
			continue // cut before the cancel took effect: nothing to finish
		}
		sound := r.Client(t)
		if err := finisher(ctx, s, asynq.NewClientFromRedisClient(sound), id); err != nil {
			t.Fatalf("cut after %d round trips: %v", n, err)
		}
		rot := mustRotation(t, s, id)
		want := Counts{Total: 2 * chunks, Succeeded: 1, Cancelled: 2*chunks - 1, Submitted: 2, Retried: 1}
		if rot.State != StateCancelled || !rot.Finished() || rot.Counts != want {
			t.Fatalf("cut after %d round trips: rotation %s (finished %v) %+v; want cancelled, finished, %+v",
				n, rot.State, rot.Finished(), rot.Counts, want)
		}
		reportOnce(t, s, id, 2*chunks)
		if got := finishedEvents(t, sound, id); got != 1 {
			t.Fatalf("cut after %d round trips: %d completion events, want 1", n, got)
		}
		if ttl := sound.TTL(ctx, s.metaKey(id)).Val(); ttl <= 0 {
			t.Fatalf("cut after %d round trips: the record has no retention (TTL %v)", n, ttl)
		}
		if cutErr == nil {
			// The cancel ends before its cut: every cut was tried.
			if n < 5 {
				t.Fatalf("a cancel of %d chunks took %d round trips; the test cut nothing", chunks, n)
			}
			return
		}
		if n > 200 {
			t.Fatal("a cancel still cut after 200 round trips")
		}
	}
}

// TestStartCutShortThenFleetChanged cuts a start's connection after each
// of its round trips (the plan's flushes among them), lets the simulator
// create and delete servers, plans again and starts again: the re-run
// completes the plan the first run froze, or refuses naming the
// difference; it never mixes the two.
func TestStartCutShortThenFleetChanged(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		for n := 0; ; n++ {
			flushDB(t, r)
			w := newWatchRig(t, r, 1500)
			sim, api := w.sim, w.api
			var targets []Target
			for i, sv := range sim.Servers() {
				if i%5 != 0 { // 1,200 targets: the chunks take three flushes
					targets = append(targets, Target{ServerID: sv.ServerID})
				}
			}
			spec := Spec{ID: "r-cut", Keypair: "kp-new", Targets: targets, ChunkSize: 1, MaxAttempts: 3, SkipMatching: true}
			first, err := MakePlan(ctx, spec, api)
			if err != nil {
				t.Fatal(err)
			}
			cut := cutClient(t, r, n)
			_, cutErr := Start(ctx, NewStore(cut, ""), asynq.NewClientFromRedisClient(cut), first, TaskOptions{}, time.Now())
			sound := r.Client(t)
			s := NewStore(sound, "")
			frozen := sound.Exists(ctx, s.planKey(spec.ID)).Val() == 1

			// Servers are created (pushing every place down) and deleted.
			if err := sim.SetChurn(2000, 1000); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			if err := sim.SetChurn(0, 0); err != nil {
				t.Fatal(err)
			}
			again, err := MakePlan(ctx, spec, api)
			if err != nil {
				t.Fatal(err)
			}
			if planDigest(first.Rotation, first.Chunks, first.Skipped) == planDigest(again.Rotation, again.Chunks, again.Skipped) {
				t.Fatal("the fleet's changes left the plan as it was: the test shows nothing")
			}

			st, err := Start(ctx, s, asynq.NewClientFromRedisClient(sound), again, TaskOptions{}, time.Now())
			var pc *PlanChangedError
			switch {
			case errors.As(err, &pc):
				if !frozen || !errors.Is(err, ErrConflict) || pc.First.Chunks != len(first.Chunks) || !strings.Contains(pc.Difference, "chunk") {
					t.Fatalf("cut after %d round trips (plan frozen: %v): refused with %v; want a conflict naming the first plan and a chunk, after a plan was frozen", n, frozen, err)
				}
				if _, err := s.Rotation(ctx, spec.ID); !errors.Is(err, ErrNotFound) {
					t.Fatalf("cut after %d round trips: refused, yet the rotation reads %v", n, err)
				}
				if !strings.Contains(err.Error(), "enqueue discard "+spec.ID) {
					t.Fatalf("the refusal does not name the way out: %v", err)
				}
				// The way out: discard the first plan (cut short once,
				// then run again), and the second one starts whole.
				if _, err := NewStore(cutClient(t, r, 2), "").Discard(ctx, spec.ID); err == nil {
					t.Fatal("a discard cut after 2 round trips did not fail: the test cut nothing")
				}
				if _, err := Start(ctx, s, asynq.NewClientFromRedisClient(sound), again, TaskOptions{}, time.Now()); !errors.As(err, &pc) {
					t.Fatalf("a start while a discard was cut short: %v, want it refused", err)
				}
				size, err := s.Discard(ctx, spec.ID)
				if err != nil || size.Chunks != len(first.Chunks) {
					t.Fatalf("discard = %+v, %v; want the first plan's %d chunks", size, err, len(first.Chunks))
				}
				if keys := sound.Keys(ctx, "*{"+spec.ID+"}*").Val(); len(keys) > 0 {
					t.Fatalf("discard left %d keys of the rotation: %v", len(keys), keys[:min(5, len(keys))])
				}
				if _, err := s.Discard(ctx, spec.ID); !errors.Is(err, ErrNoPlan) {
					t.Fatalf("a second discard = %v, want ErrNoPlan", err)
				}
				st, err := Start(ctx, s, asynq.NewClientFromRedisClient(sound), again, TaskOptions{}, time.Now())
				if err != nil {
					t.Fatalf("start after the discard: %v", err)
				}
				samePlan(t, s, st.Rotation, again)
			case err != nil:
				t.Fatalf("cut after %d round trips: start run again: %v", n, err)
			default:
				want := first // the plan frozen first is the one completed
				if !frozen {
					want = again // the cut start wrote nothing
				}
				samePlan(t, s, st.Rotation, want)
				if _, err := s.Discard(ctx, spec.ID); !errors.Is(err, ErrConflict) {
					t.Fatalf("discard of a started rotation = %v, want it refused", err)
				}
				samePlan(t, s, mustRotation(t, s, spec.ID), want)
			}
			if cutErr == nil {
				if n < 10 {
					t.Fatalf("a start took %d round trips; the test cut nothing", n)
				}
				return
			}
		}
	})
}

// samePlan checks that rotation rot's chunks and skipped servers are
// exactly plan's.
func samePlan(t *testing.T, s *Store, rot *Rotation, plan *Plan) {
	t.Helper()
	ctx := context.Background()
	if rot.Chunks != len(plan.Chunks) || rot.Counts.Skipped != int64(len(plan.Skipped)) {
		t.Fatalf("rotation has %d chunks, %d skipped; the plan %d, %d", rot.Chunks, rot.Counts.Skipped, len(plan.Chunks), len(plan.Skipped))
	}
	for i, c := range plan.Chunks {
		b, err := s.Batch(ctx, rot.ID, i+1)
		if err != nil {
			t.Fatal(err)
		}
		if encodeEntries(b.Servers) != encodeEntries(c) {
			t.Fatalf("chunk %d holds %v, the plan %v", i+1, b.Servers, c)
		}
	}
	if b, err := s.Batch(ctx, rot.ID, len(plan.Chunks)+1); err != nil || len(b.Servers) != 0 {
		t.Fatalf("a chunk beyond the plan holds %v (%v)", b.Servers, err)
	}
}

// outageHook fails the next round trips (a command or a pipeline each)
// with io.EOF, as a Redis failing over does, once armed with their number.
type outageHook struct{ fails atomic.Int64 }

func (h *outageHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *outageHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if h.fails.Add(-1) >= 0 {
			cmd.SetErr(io.EOF)
			return io.EOF
		}
		return next(ctx, cmd)
	}
}

func (h *outageHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if h.fails.Add(-1) >= 0 {
			for _, c := range cmds {
				c.SetErr(io.EOF)
			}
			return io.EOF
		}
		return next(ctx, cmds)
	}
}

// armingAPI calls arm once UpdateKeypair has acted.
type armingAPI struct {
	API
	arm func()
}

func (a armingAPI) UpdateKeypair(ctx context.Context, servers []cph.ServerKeypair) (*cph.UpdateKeypairResponse, error) {
	resp, err := a.API.UpdateKeypair(ctx, servers)
	a.arm()
	return resp, err
}

// TestCheckpointRidesAFailover: Redis goes away right after UpdateKeypair
// acted, for six tries of the checkpoint (5 s with their backoff); the
// submit waits for it instead of failing, so nothing is submitted twice.
func TestCheckpointRidesAFailover(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		w := newWatchRig(t, r, 10)
		w.start(t, "r-fo")
		rdb := r.Client(t)
		outage := &outageHook{}
		rdb.AddHook(outage)
		h := NewHandler(HandlerOptions{Store: NewStore(rdb, ""), API: armingAPI{API: w.api, arm: func() { outage.fails.Store(6) }},
			Limiter: nopLimiter{}, Enqueuer: w.enq, Config: Config{Tasks: w.opts}})
		data, err := marshal(SubmitPayload{Rotation: "r-fo", Batch: 1, Servers: 10})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.HandleSubmit(ctx, asynq.NewTask(TypeSubmit, data)); err != nil {
			t.Fatalf("submit through a failover: %v", err)
		}
		if left := outage.fails.Load(); left > 0 {
			t.Fatalf("%d of the outage's failures unused: the checkpoint did not meet it", left)
		}
		b, err := w.store.Batch(ctx, "r-fo", 1)
		if err != nil || !b.Checkpointed || b.RequestID == "" {
			t.Fatalf("batch 1 %+v, %v; want checkpointed", b, err)
		}
		if rot := mustRotation(t, w.store, "r-fo"); rot.Counts.Resubmitted != 0 || rot.Counts.Submitted != 10 {
			t.Fatalf("counts %+v; want 10 submitted, none resubmitted", rot.Counts)
		}
		for _, s := range w.sim.Servers() {
			if n := w.sim.SubmitCount(s.ServerID); n != 1 {
				t.Errorf("server %s submitted %d times", s.ServerID, n)
			}
		}
	})
}
