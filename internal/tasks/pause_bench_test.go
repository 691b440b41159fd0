package tasks

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// BenchmarkPausedRotation measures what a paused rotation of 1,000 chunks
// costs Redis: the commands a second (miniredis counts them) that one
// worker sends while the rotation waits for resume (its asynq server with
// the worker's settings, and the watchdog's scheduler), beside the same
// worker with no rotation at all, asynq's own floor. Each op is a second.
//
//	go test -run '^$' -bench PausedRotation -benchtime 10x ./internal/tasks
func BenchmarkPausedRotation(b *testing.B) {
	for _, chunks := range []int{0, 1000} {
		name := fmt.Sprintf("paused_%d_chunks", chunks)
		if chunks == 0 {
			name = "idle_worker"
		}
		b.Run(name, func(b *testing.B) { benchPaused(b, chunks) })
	}
}

func benchPaused(b *testing.B, chunks int) {
	ctx := context.Background()
	r := testredis.Mini(b)
	rdb := r.Client(b)
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	b.Cleanup(func() { enq.Close() })
	opts := TaskOptions{Timeout: 30 * time.Second}
	if chunks > 0 {
		ts := make([]Target, chunks)
		for i := range ts {
			ts[i] = Target{ServerID: fmt.Sprintf("s%05d", i)}
		}
		plan, err := MakePlan(ctx, Spec{ID: "r-paused", Keypair: "kp-new", Targets: ts, ChunkSize: 1, MaxAttempts: 3}, nil)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Start(ctx, store, enq, plan, opts, time.Now()); err != nil {
			b.Fatal(err)
		}
		if err := store.SetState(ctx, "r-paused", StatePaused, "paused by the benchmark", "test"); err != nil {
			b.Fatal(err)
		}
	}
	h := NewHandler(HandlerOptions{Store: store, Limiter: nopLimiter{}, Enqueuer: enq, Inspector: asynq.NewInspectorFromRedisClient(rdb),
		Config: Config{Tasks: opts}})
	mux := asynq.NewServeMux()
	h.Register(mux)
	// The worker's own settings (cmd/worker).
	w := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 20, Queues: Queues(), IsFailure: IsFailure,
		RetryDelayFunc: RetryDelay, DelayedTaskCheckInterval: DelayedTaskCheckInterval,
		TaskCheckInterval: TaskCheckInterval,
		LogLevel:          asynq.FatalLevel})
	if err := w.Start(mux); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(w.Shutdown)
	sch, err := NewWatchdogScheduler(r.ConnOpt(), "", DefaultWatchdogInterval, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	if err := sch.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(sch.Shutdown)
	// The queued submit tasks run once, and what they do then (end, or
	// come back every few seconds) goes on.
	time.Sleep(6 * time.Second)

	b.ResetTimer()
	start, n := time.Now(), r.Mini.CommandCount()
	for range b.N {
		time.Sleep(time.Second)
	}
	b.ReportMetric(float64(r.Mini.CommandCount()-n)/time.Since(start).Seconds(), "redis-cmds/s")
}
