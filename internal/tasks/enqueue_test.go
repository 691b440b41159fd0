package tasks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// A wave's chunks are enqueued submitAhead at a time, in the plan's order:
// each chunk whose submit ended lets the next one in, running the top-up
// twice (two processes, or a task run again after a crash) enqueues
// nothing twice, and a paused rotation enqueues nothing.
func TestTopUpKeepsSubmitAheadChunksQueued(t *testing.T) {
	r := testredis.Mini(t)
	rdb := r.Client(t)
	ctx := context.Background()
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ids := make([]string, 40)
	targets := make([]Target, len(ids))
	for i := range ids {
		ids[i] = fmt.Sprintf("s%02d", i)
		targets[i] = Target{ServerID: ids[i]}
	}
	plan, err := MakePlan(ctx, Spec{ID: "r", Keypair: "kp-new", Targets: targets, ChunkSize: 1, MaxAttempts: 3, SkipMatching: true},
		fleetOn("kp-old", ids...))
	if err != nil {
		t.Fatal(err)
	}
	st, err := Start(ctx, store, enq, plan, TaskOptions{}, time.Now())
	if err != nil || st.Enqueued != submitAhead {
		t.Fatalf("Start = %+v, %v; want the first %d chunks enqueued", st, err, submitAhead)
	}
	queued := func() []int {
		t.Helper()
		var out []int
		for c := 1; c <= 40; c++ {
			if _, err := insp.GetTaskInfo(QueueSubmit, SubmitTaskID("r", c)); err == nil {
				out = append(out, c)
			}
		}
		return out
	}
	want := func(first, last int) {
		t.Helper()
		got := queued()
		if len(got) != last-first+1 || got[0] != first || got[len(got)-1] != last {
			t.Fatalf("submit tasks of chunks %v, want %d to %d", got, first, last)
		}
	}
	want(1, submitAhead)

	topUpNow := func() int {
		t.Helper()
		rot, err := store.Rotation(ctx, "r")
		if err != nil {
			t.Fatal(err)
		}
		n, err := topUp(ctx, store, enq, rot, TaskOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	// Chunks 3 and 1 are submitted (out of order): two more come in.
	for _, c := range []int{3, 1} {
		if _, err := store.Checkpoint(ctx, "r", c, 1, "req", map[string]string{ids[c-1]: "job"}, nil, time.Now(), time.Now()); err != nil {
			t.Fatal(err)
		}
		insp.DeleteTask(QueueSubmit, SubmitTaskID("r", c)) // as asynq does once the task succeeded
	}
	if n := topUpNow(); n != 2 {
		t.Fatalf("top-up after 2 submits enqueued %d chunks, want 2", n)
	}
	if n := topUpNow(); n != 0 {
		t.Fatalf("a second top-up enqueued %d chunks, want 0", n)
	}
	if got := queued(); len(got) != submitAhead || got[len(got)-1] != submitAhead+2 {
		t.Fatalf("submit tasks of chunks %v, want %d of them up to %d", got, submitAhead, submitAhead+2)
	}

	// Paused: nothing more, however many chunks ended.
	if err := store.SetState(ctx, "r", StatePaused, "test", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := store.Checkpoint(ctx, "r", 2, 1, "req", map[string]string{ids[1]: "job"}, nil, time.Now(), time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := topUpNow(); n != 0 {
		t.Fatalf("top-up of a paused rotation enqueued %d chunks", n)
	}
	// Resumed: the chunk that ended while paused lets one more in.
	if _, n, err := Resume(ctx, store, enq, "r", nil, "test", TaskOptions{}); err != nil || n != 1 {
		t.Fatalf("Resume enqueued %d chunks, %v; want 1", n, err)
	}
}
