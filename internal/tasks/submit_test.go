package tasks

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	goredis "github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// refuseAllAPI refuses every server of an UpdateKeypair call, as CPH does
// servers deleted since they were listed (CPS.0016), and creates no job.
type refuseAllAPI struct{ failOnceAPI }

func (*refuseAllAPI) UpdateKeypair(_ context.Context, s []cph.ServerKeypair) (*cph.UpdateKeypairResponse, error) {
	resp := &cph.UpdateKeypairResponse{RequestID: "req"}
	for _, k := range s {
		resp.Jobs = append(resp.Jobs, cph.ServerJob{ServerID: k.ServerID, ErrorCode: cph.CodeInvalidServer, ErrorMsg: "server_id is invalid."})
	}
	return resp, nil
}

// TestRefusedBatchSettledAtOnce: a batch whose every server UpdateKeypair
// refused has no job to wait for: it comes due at once, and the tick chain
// its checkpoint starts runs now, not a first poll later (at a rotation's
// tail, a retried server deleted since would otherwise hold it up).
func TestRefusedBatchSettledAtOnce(t *testing.T) {
	ctx := context.Background()
	rdb, store, enq, id := startTwo(t)
	h := NewHandler(HandlerOptions{Store: store, API: &refuseAllAPI{}, Limiter: nopLimiter{}, Enqueuer: enq})
	payload, err := json.Marshal(SubmitPayload{Rotation: id, Batch: 1, Servers: 2})
	if err != nil {
		t.Fatal(err)
	}
	before := time.Now()
	if err := h.HandleSubmit(ctx, asynq.NewTask(TypeSubmit, payload)); err != nil {
		t.Fatal(err)
	}
	due, _, _, err := store.DuePolls(ctx, id, time.Now(), time.Now(), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(due) != 1 || due[0] != 1 {
		t.Fatalf("batches due now %v, want the refused batch 1", due)
	}
	tick, err := asynq.NewInspectorFromRedisClient(rdb).ListScheduledTasks(QueuePoll)
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range tick {
		if ti.Type == TypeTick && ti.NextProcessAt.After(before.Add(time.Second)) {
			t.Fatalf("first tick scheduled %v after the submit, want at once", ti.NextProcessAt.Sub(before))
		}
	}
}

// startTwo starts a rotation of servers a and b, one chunk, on miniredis
// (its submit task enqueued, not run), and returns its parts and id.
func startTwo(t *testing.T) (*goredis.Client, *Store, *asynq.Client, string) {
	t.Helper()
	ctx := context.Background()
	rdb := testredis.Mini(t).Client(t)
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { enq.Close() })
	plan, err := MakePlan(ctx, Spec{Keypair: "kp-new", Targets: []Target{{ServerID: "a"}, {ServerID: "b"}}, ChunkSize: 100, MaxAttempts: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	started, err := Start(ctx, store, enq, plan, TaskOptions{}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return rdb, store, enq, started.Rotation.ID
}
