package tasks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// BenchmarkStartHugeWave measures the start of a rotation whose one wave
// holds 100,000 chunks (of one server: the cost is the chunks', the
// servers add bytes): freezing the plan, writing its chunks and the record
// (Store.Create, pipelined 500 commands a round trip), and enqueueing the
// wave's first submitAhead chunks (topUp); the rest are enqueued as these
// are submitted, a chunk at a time, so no task ever enqueues a whole wave.
// It fails if a start takes longer than the task timeout (2 min), the
// limit within which the start must finish when it runs in a task. It
// runs on miniredis and, with CPH_REKEY_TEST_REDIS set, on a real Redis.
// Metrics: start-s (one start), cmds/chunk (miniredis: every command
// sent), and the topUp after a chunk is submitted (topup-ms).
//
//	flock /tmp/bench.lock go test -run '^$' -bench StartHugeWave -benchtime 3x ./internal/tasks
func BenchmarkStartHugeWave(b *testing.B) {
	b.Run("miniredis", func(b *testing.B) { benchStartHuge(b, testredis.Mini(b)) })
	b.Run("redis", func(b *testing.B) { benchStartHuge(b, testredis.Real(b)) })
}

func benchStartHuge(b *testing.B, r *testredis.Redis) {
	const chunks = 100_000
	ctx := context.Background()
	rdb := r.Client(b)
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	b.Cleanup(func() { enq.Close() })
	opts := TaskOptions{}.withDefaults()
	ts := make([]Target, chunks)
	for i := range ts {
		ts[i] = Target{ServerID: fmt.Sprintf("s%06d", i)}
	}
	var (
		total, topUps time.Duration
		cmds          int
		n             int
	)
	for b.Loop() {
		n++
		plan, err := MakePlan(ctx, Spec{ID: fmt.Sprintf("r-huge-%d", n), Keypair: "kp-new", Targets: ts, ChunkSize: 1, MaxAttempts: 3}, nil)
		if err != nil {
			b.Fatal(err)
		}
		before := 0
		if r.Mini != nil {
			before = r.Mini.CommandCount()
		}
		start := time.Now()
		st, err := Start(ctx, store, enq, plan, opts, time.Now())
		took := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if r.Mini != nil {
			cmds += r.Mini.CommandCount() - before
		}
		if st.Enqueued != submitAhead || st.Rotation.Chunks != chunks {
			b.Fatalf("start enqueued %d of %d chunks, want the first %d", st.Enqueued, st.Rotation.Chunks, submitAhead)
		}
		if took > opts.Timeout {
			b.Fatalf("a start of %d chunks took %s, longer than the task timeout %s", chunks, took, opts.Timeout)
		}
		total += took
		// The first chunk is submitted: the next one takes its place.
		if _, err := store.MarkIntent(ctx, st.Rotation.ID, 1); err != nil {
			b.Fatal(err)
		}
		if _, err := store.Checkpoint(ctx, st.Rotation.ID, 1, 1, "req-1", map[string]string{"s000000": "job-1"}, nil, time.Now(), time.Now().Add(time.Minute)); err != nil {
			b.Fatal(err)
		}
		rot, err := store.Rotation(ctx, st.Rotation.ID)
		if err != nil {
			b.Fatal(err)
		}
		start = time.Now()
		added, err := topUp(ctx, store, enq, rot, opts)
		topUps += time.Since(start)
		if err != nil || added != 1 {
			b.Fatalf("topUp after the first submit enqueued %d, %v; want 1", added, err)
		}
	}
	b.ReportMetric(total.Seconds()/float64(n), "start-s")
	b.ReportMetric(float64(topUps.Microseconds())/1000/float64(n), "topup-ms")
	if r.Mini != nil {
		b.ReportMetric(float64(cmds)/float64(n)/chunks, "cmds/chunk")
	}
}
