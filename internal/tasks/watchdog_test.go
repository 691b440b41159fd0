package tasks

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// syncBuffer is a log sink several goroutines write to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// watchRig is a rotation's surroundings: Redis, the simulator, and a
// worker (asynq server and watchdog scheduler) started on demand.
type watchRig struct {
	r     *testredis.Redis
	store *Store
	enq   *asynq.Client
	ins   *asynq.Inspector
	api   *cph.Client
	sim   *cphsim.Sim
	opts  TaskOptions
	logs  syncBuffer
}

func newWatchRig(t *testing.T, r *testredis.Redis, servers int) *watchRig {
	t.Helper()
	rdb := r.Client(t)
	sim := cphsim.New(cphsim.Options{ProjectID: gateProject, AccessKey: gateAK, SecretKey: gateSK, Servers: servers,
		JobLatency: 300 * time.Millisecond, Seed: 5})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	api, err := cph.NewClient(cph.Config{Endpoint: srv.URL, ProjectID: gateProject,
		Credentials: cph.Credentials{AccessKey: gateAK, SecretKey: gateSK}})
	if err != nil {
		t.Fatal(err)
	}
	w := &watchRig{r: r, store: NewStore(rdb, ""), enq: asynq.NewClientFromRedisClient(rdb), ins: asynq.NewInspectorFromRedisClient(rdb),
		api: api, sim: sim, opts: TaskOptions{Timeout: 30 * time.Second}}
	t.Cleanup(func() { w.enq.Close() })
	return w
}

// start plans and starts rotation id over every server of the simulator,
// in chunks of 10.
func (w *watchRig) start(t *testing.T, id string) {
	t.Helper()
	ctx := context.Background()
	var ts []Target
	for _, s := range w.sim.Servers() {
		ts = append(ts, Target{ServerID: s.ServerID})
	}
	plan, err := MakePlan(ctx, Spec{ID: id, Keypair: "kp-new", Targets: ts, ChunkSize: 10, MaxAttempts: 3, SkipMatching: true}, w.api)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, w.store, w.enq, plan, w.opts, time.Now()); err != nil {
		t.Fatal(err)
	}
}

// work starts a worker, and the watchdog's scheduler every watchdog (0:
// none).
func (w *watchRig) work(t *testing.T, watchdog time.Duration) {
	t.Helper()
	rdb := w.r.Client(t)
	h := NewHandler(HandlerOptions{Store: w.store, API: w.api, Limiter: nopLimiter{}, Enqueuer: w.enq, Inspector: w.ins,
		Logger: slog.New(slog.NewTextHandler(&w.logs, nil)),
		Config: quickConfig(w.opts)})
	mux := asynq.NewServeMux()
	h.Register(mux)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 8, Queues: Queues(), IsFailure: IsFailure,
		RetryDelayFunc: RetryDelay, ShutdownTimeout: 2 * time.Second, DelayedTaskCheckInterval: 50 * time.Millisecond,
		LogLevel: asynq.FatalLevel})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	if watchdog == 0 {
		return
	}
	sch, err := NewWatchdogScheduler(w.r.ConnOpt(), "", watchdog, w.opts, slog.New(slog.NewTextHandler(&w.logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := sch.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sch.Shutdown)
}

// until waits up to d for cond on rotation id.
func (w *watchRig) until(t *testing.T, id string, d time.Duration, what string, cond func(*Rotation) bool) *Rotation {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		rot, err := w.store.Rotation(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(rot) {
			return rot
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation not %s after %s: %s %+v\n%s", what, d, rot.State, rot.Counts, w.logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// succeeded waits for rotation id to finish and checks every one of
// servers succeeded, once.
func (w *watchRig) succeeded(t *testing.T, id string, servers int) {
	t.Helper()
	rot := w.until(t, id, 90*time.Second, "finished", (*Rotation).Finished)
	if rot.State != StateSucceeded || rot.Counts.Succeeded != int64(servers) {
		t.Fatalf("rotation ended %s %+v; want all %d servers succeeded", rot.State, rot.Counts, servers)
	}
	reportOnce(t, w.store, id, servers)
}

// TestWatchdogRevivesLostTasks archives a queued submit task and deletes
// the live tick task through asynq's Inspector mid-rotation, as the asynq
// UI's buttons do: nothing else would ever submit that chunk or poll the
// rotation (a checkpoint revives a chain only 3 minutes late, and no
// checkpoint comes after the last one), and the rotation still finishes,
// every server once, without an operator.
func TestWatchdogRevivesLostTasks(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		w := newWatchRig(t, r, 200)
		w.start(t, "r-wd")
		// Chunk 3's submit task is archived before any worker runs: its
		// ID stays taken, so no enqueue of the chunk can replace it.
		if err := w.ins.ArchiveTask(QueueSubmit, SubmitTaskID("r-wd", 3)); err != nil {
			t.Fatal(err)
		}
		w.work(t, 2*time.Second)

		// The live chain's next tick is deleted (a running tick cannot be;
		// the next one is tried then).
		deadline := time.Now().Add(30 * time.Second)
		for deleted := false; !deleted; {
			if time.Now().After(deadline) {
				t.Fatal("no tick task could be deleted in 30 s")
			}
			c, err := w.store.TickChain(ctx, "r-wd")
			if err != nil {
				t.Fatal(err)
			}
			if c.Live && !c.Running {
				tick := c.Task()
				deleted = w.ins.DeleteTask(QueuePoll, TickTaskID("r-wd", tick.Gen, tick.Seq)) == nil
			}
			if !deleted {
				time.Sleep(10 * time.Millisecond)
			}
		}

		w.succeeded(t, "r-wd", 200)
		for _, want := range []string{"submit tasks gone: enqueued again", "tick task gone: a new tick chain started"} {
			if !strings.Contains(w.logs.String(), want) {
				t.Errorf("the watchdog did not log %q", want)
			}
		}
	})
}

// TestPausedRotationHoldsNoTasks: the submit tasks of a paused rotation
// end instead of coming back every few seconds, and resume enqueues them
// again; the rotation then finishes, every server once.
func TestPausedRotationHoldsNoTasks(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		w := newWatchRig(t, r, 200)
		w.start(t, "r-p")
		if err := w.store.SetState(ctx, "r-p", StatePaused, "paused by the test", "test"); err != nil {
			t.Fatal(err)
		}
		w.work(t, 0)
		deadline := time.Now().Add(30 * time.Second)
		for {
			q, err := w.ins.GetQueueInfo(QueueSubmit)
			if err != nil {
				t.Fatal(err)
			}
			if q.Size == 0 && q.Processed >= 16 {
				break // the 16 submit tasks ran once and ended
			}
			if time.Now().After(deadline) {
				t.Fatalf("a paused rotation's submit queue still holds %d tasks after 30 s (%d processed)", q.Size, q.Processed)
			}
			time.Sleep(50 * time.Millisecond)
		}
		if rot := w.until(t, "r-p", 0, "paused", func(r *Rotation) bool { return r.State == StatePaused }); rot.Counts.Submitted != 0 {
			t.Fatalf("a paused rotation submitted %d servers", rot.Counts.Submitted)
		}
		if _, n, err := Resume(ctx, w.store, w.enq, "r-p", nil, "test", w.opts); err != nil || n != submitAhead {
			t.Fatalf("Resume enqueued %d, %v; want the %d chunks the pause ended", n, err, submitAhead)
		}
		w.succeeded(t, "r-p", 200)
	})
}
