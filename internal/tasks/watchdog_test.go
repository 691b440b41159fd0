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

// TestWatchdogRevivesLostTasks archives a queued submit task and deletes
// the live tick task through asynq's Inspector mid-rotation, as the asynq
// UI's buttons do: nothing else would ever submit that chunk or poll the
// rotation (a checkpoint revives a chain only 3 minutes late, and no
// checkpoint comes after the last one), and the rotation still finishes,
// every server once, without an operator.
func TestWatchdogRevivesLostTasks(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		rdb := r.Client(t)
		sim := cphsim.New(cphsim.Options{ProjectID: gateProject, AccessKey: gateAK, SecretKey: gateSK, Servers: 200,
			JobLatency: 300 * time.Millisecond, Seed: 5})
		srv := httptest.NewServer(sim)
		t.Cleanup(srv.Close)
		api, err := cph.NewClient(cph.Config{Endpoint: srv.URL, ProjectID: gateProject,
			Credentials: cph.Credentials{AccessKey: gateAK, SecretKey: gateSK}})
		if err != nil {
			t.Fatal(err)
		}
		store := NewStore(rdb, "")
		enq := asynq.NewClientFromRedisClient(rdb)
		t.Cleanup(func() { enq.Close() })
		ins := asynq.NewInspectorFromRedisClient(rdb)
		opts := TaskOptions{Timeout: 30 * time.Second}

		var ts []Target
		for _, s := range sim.Servers() {
			ts = append(ts, Target{ServerID: s.ServerID})
		}
		plan, err := MakePlan(ctx, Spec{ID: "r-wd", Keypair: "kp-new", Targets: ts, ChunkSize: 10, MaxAttempts: 3, SkipMatching: true}, api)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Start(ctx, store, enq, plan, opts, time.Now()); err != nil {
			t.Fatal(err)
		}
		// Chunk 3's submit task is archived before any worker runs: its
		// ID stays taken, so no enqueue of the chunk can replace it.
		if err := ins.ArchiveTask(QueueSubmit, SubmitTaskID("r-wd", 3)); err != nil {
			t.Fatal(err)
		}

		var logs syncBuffer
		h := NewHandler(HandlerOptions{Store: store, API: api, Limiter: nopLimiter{}, Enqueuer: enq, Inspector: ins,
			Logger: slog.New(slog.NewTextHandler(&logs, nil)),
			Config: Config{FirstPoll: 300 * time.Millisecond, PollCap: 300 * time.Millisecond, RetryBase: 50 * time.Millisecond,
				RetryCap: 200 * time.Millisecond, Linger: 50 * time.Millisecond, VerifyLinger: 100 * time.Millisecond,
				JobTimeout: time.Minute, CallTimeout: 5 * time.Second, Tasks: opts}})
		mux := asynq.NewServeMux()
		h.Register(mux)
		w := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 8, Queues: Queues(), IsFailure: IsFailure,
			RetryDelayFunc: RetryDelay, ShutdownTimeout: 2 * time.Second, DelayedTaskCheckInterval: 50 * time.Millisecond,
			LogLevel: asynq.FatalLevel})
		if err := w.Start(mux); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(w.Shutdown)
		sch, err := NewWatchdogScheduler(r.ConnOpt(), 2*time.Second, opts, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatal(err)
		}
		if err := sch.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(sch.Shutdown)

		// The live chain's next tick is deleted (a running tick cannot be;
		// the next one is tried then).
		deadline := time.Now().Add(30 * time.Second)
		for deleted := false; !deleted; {
			if time.Now().After(deadline) {
				t.Fatal("no tick task could be deleted in 30 s")
			}
			c, err := store.TickChain(ctx, "r-wd")
			if err != nil {
				t.Fatal(err)
			}
			if c.Live && !c.Running {
				tick := c.Task()
				deleted = ins.DeleteTask(QueuePoll, TickTaskID("r-wd", tick.Gen, tick.Seq)) == nil
			}
			if !deleted {
				time.Sleep(10 * time.Millisecond)
			}
		}

		deadline = time.Now().Add(90 * time.Second)
		for {
			rot, err := store.Rotation(ctx, "r-wd")
			if err != nil {
				t.Fatal(err)
			}
			if rot.Finished() {
				if rot.State != StateSucceeded || rot.Counts.Succeeded != 200 {
					t.Fatalf("rotation ended %s %+v; want all 200 servers succeeded", rot.State, rot.Counts)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("rotation not finished after 90 s: %s %+v\n%s", rot.State, rot.Counts, logs.String())
			}
			time.Sleep(50 * time.Millisecond)
		}
		reportOnce(t, store, "r-wd", 200)
		for _, want := range []string{"submit task gone: enqueued again", "tick task gone: a new tick chain started"} {
			if !strings.Contains(logs.String(), want) {
				t.Errorf("the watchdog did not log %q", want)
			}
		}
	})
}
