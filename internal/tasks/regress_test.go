package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	goredis "github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// failOnceAPI answers UpdateKeypair with one 503, then succeeds.
type failOnceAPI struct{ calls atomic.Int32 }

func (f *failOnceAPI) UpdateKeypair(ctx context.Context, s []cph.ServerKeypair) (*cph.UpdateKeypairResponse, error) {
	if f.calls.Add(1) == 1 {
		return nil, &cph.Error{Op: "UpdateKeypair", StatusCode: 503, Kind: cph.KindTransient}
	}
	resp := &cph.UpdateKeypairResponse{RequestID: "req"}
	for _, k := range s {
		resp.Jobs = append(resp.Jobs, cph.ServerJob{ServerID: k.ServerID, JobID: "job-" + k.ServerID})
	}
	return resp, nil
}

func (f *failOnceAPI) ListJobsOf(context.Context, int, ...string) ([]cph.Job, error) { return nil, nil }
func (f *failOnceAPI) ShowServer(context.Context, string) (*cph.Server, error)       { return nil, nil }
func (f *failOnceAPI) ListServersPage(context.Context, int, int) (*cph.ListServersResponse, error) {
	return &cph.ListServersResponse{}, nil
}

// delayAfterFirst grants the first token and then says "come back later"
// every time.
type delayAfterFirst struct{ n atomic.Int32 }

func (l *delayAfterFirst) Wait(context.Context, string) error {
	if l.n.Add(1) == 1 {
		return nil
	}
	return &ratelimit.DelayError{RetryIn: 200 * time.Millisecond}
}

func (l *delayAfterFirst) Throttled(context.Context, string, time.Duration, float64) error {
	return nil
}

func (l *delayAfterFirst) Rate(string) float64 { return 20 }

type fixedLister []cph.Server

func (l fixedLister) ListServers(ctx context.Context, f cph.ServerFilter, fn func([]cph.Server) error) error {
	return fn(l)
}

func fleetOn(kp string, ids ...string) fixedLister {
	var l fixedLister
	for _, id := range ids {
		l = append(l, cph.Server{ServerID: id, KeypairName: kp, Status: cph.ServerStatusNormal})
	}
	return l
}

// TestRateLimitAfterLastFailureDoesNotArchive: asynq archives a task that
// returns any error once Retried reaches its MaxRetry, before it asks
// IsFailure. A rate-limit wait after a task's last real failure must still
// put it back, or the chunk's servers are never terminal.
func TestRateLimitAfterLastFailureDoesNotArchive(t *testing.T) {
	r := testredis.Mini(t)
	rdb := r.Client(t)
	ctx := context.Background()
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	opts := TaskOptions{MaxRetry: 1}
	plan, err := MakePlan(ctx, Spec{Keypair: "kp-new", Targets: []Target{{ServerID: "a"}, {ServerID: "b"}}, ChunkSize: 50, MaxAttempts: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, store, enq, plan, opts, time.Now()); err != nil {
		t.Fatal(err)
	}
	h := NewHandler(HandlerOptions{Store: store, API: &failOnceAPI{}, Limiter: &delayAfterFirst{}, Enqueuer: enq, Config: Config{Tasks: opts}})
	mux := asynq.NewServeMux()
	h.Register(mux)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 2, Queues: Queues(), IsFailure: IsFailure,
		RetryDelayFunc: RetryDelay, DelayedTaskCheckInterval: 100 * time.Millisecond, LogLevel: asynq.FatalLevel})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	time.Sleep(4 * time.Second) // one 503 (retried after 1-2 s), then rate-limit waits
	srv.Shutdown()
	insp := asynq.NewInspectorFromRedisClient(rdb)
	info, err := insp.GetQueueInfo(QueueSubmit)
	if err != nil {
		t.Fatal(err)
	}
	if info.Archived != 0 {
		t.Fatalf("%d submit tasks archived after a rate-limit wait: their servers would never be terminal", info.Archived)
	}
	if info.Retry+info.Pending+info.Scheduled != 1 {
		t.Fatalf("queue %+v: want the submit task waiting to run again", info)
	}
}

// TestRerunWritesNothingIntoExistingRotation: re-running a start after the
// rotation changed the fleet (everything now "skipped"), or with another
// target list under the same id, must not touch the existing rotation.
func TestRerunWritesNothingIntoExistingRotation(t *testing.T) {
	r := testredis.Mini(t)
	rdb := r.Client(t)
	ctx := context.Background()
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	spec := Spec{ID: "prod", Keypair: "kp-new", Targets: []Target{{ServerID: "a"}, {ServerID: "b"}}, ChunkSize: 50, MaxAttempts: 3, SkipMatching: true}
	plan, err := MakePlan(ctx, spec, fleetOn("kp-old", "a", "b"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, store, enq, plan, TaskOptions{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	store.Checkpoint(ctx, "prod", 1, 2, "req", map[string]string{"a": "ja", "b": "jb"}, nil, time.Now(), time.Now())
	if res, err := store.Resolve(ctx, "prod", 1, 1, outcomes(OutcomeSucceeded, "a", "b"), time.Time{}, false, time.Now()); err != nil || !res.Finished {
		t.Fatalf("Resolve = %+v, %v", res, err)
	}

	again, err := MakePlan(ctx, spec, fleetOn("kp-new", "a", "b")) // the same command, after the rotation
	if err != nil {
		t.Fatal(err)
	}
	if st, err := Start(ctx, store, enq, again, TaskOptions{}, time.Now()); err != nil || st.Created || st.Enqueued != 0 {
		t.Fatalf("re-run Start = %+v, %v; want nothing", st, err)
	}
	other, err := MakePlan(ctx, Spec{ID: "prod", Keypair: "kp-new", Targets: []Target{{ServerID: "x"}}, ChunkSize: 50, MaxAttempts: 3,
		SkipMatching: true}, fleetOn("kp-new", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, store, enq, other, TaskOptions{}, time.Now()); !errors.Is(err, ErrConflict) {
		t.Fatalf("Start with other targets under the same id: %v, want ErrConflict", err)
	}
	var rows []string
	store.Report(ctx, "prod", func(row ReportRow) error {
		rows = append(rows, row.ServerID+":"+string(row.Outcome))
		return nil
	})
	if len(rows) != 2 || rows[0] != "a:succeeded" || rows[1] != "b:succeeded" {
		t.Fatalf("report rows %v, want a and b succeeded, once each", rows)
	}
}

func TestDuplicateTargetsRejected(t *testing.T) {
	_, err := MakePlan(context.Background(), Spec{Keypair: "kp", Targets: []Target{{ServerID: "a"}, {ServerID: "b"}, {ServerID: "a"}},
		ChunkSize: 50, MaxAttempts: 3}, nil)
	if err == nil {
		t.Fatal("MakePlan accepted a server listed twice: its chunk attempt would never complete")
	}
}

// TestRetentionSetByRerun: the task that finished a rotation may die before
// setting its retention; the re-run must set it.
func TestRetentionSetByRerun(t *testing.T) {
	r := testredis.Mini(t)
	rdb := r.Client(t)
	ctx := context.Background()
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	plan, err := MakePlan(ctx, Spec{Keypair: "kp-new", Targets: []Target{{ServerID: "a"}}, ChunkSize: 50, MaxAttempts: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	Start(ctx, store, enq, plan, TaskOptions{}, time.Now())
	id := plan.Rotation.ID
	if cp, err := store.Checkpoint(ctx, id, 1, 1, "req", map[string]string{"a": "ja"}, nil, time.Now(), time.Now()); err != nil || cp.Tick != 1 {
		t.Fatalf("Checkpoint = %+v, %v; want the first tick chain", cp, err)
	}
	if res, _ := store.Resolve(ctx, id, 1, 1, outcomes(OutcomeSucceeded, "a"), time.Time{}, false, time.Now()); !res.Finished {
		t.Fatal("rotation not finished")
	}
	// The finishing task dies here; asynq runs it again.
	h := NewHandler(HandlerOptions{Store: store, API: &failOnceAPI{}, Limiter: &delayAfterFirst{}, Enqueuer: enq})
	data, _ := json.Marshal(TickPayload{Rotation: id, Gen: 1, Seq: 1})
	if err := h.HandleTick(ctx, asynq.NewTask(TypeTick, data)); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.TTL(ctx, store.metaKey(id)).Val(); ttl <= 0 {
		t.Fatalf("rotation record TTL %v after the re-run: retention never set", ttl)
	}
}

// startedRotation starts a rotation of the given servers on miniredis,
// with nobody working on it.
func startedRotation(t *testing.T, servers ...string) (*goredis.Client, *Store, *asynq.Client, *Plan) {
	t.Helper()
	rdb := testredis.Mini(t).Client(t)
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	var ts []Target
	for _, id := range servers {
		ts = append(ts, Target{ServerID: id})
	}
	plan, err := MakePlan(context.Background(), Spec{Keypair: "kp-new", Targets: ts, ChunkSize: 100, MaxAttempts: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(context.Background(), store, enq, plan, TaskOptions{}, time.Now()); err != nil {
		t.Fatal(err)
	}
	return rdb, store, enq, plan
}

// rejectAPI answers UpdateKeypair with a 400 for the whole request.
type rejectAPI struct{ *failOnceAPI }

func (rejectAPI) UpdateKeypair(context.Context, []cph.ServerKeypair) (*cph.UpdateKeypairResponse, error) {
	return nil, &cph.Error{Op: "UpdateKeypair", StatusCode: 400, Code: "CPS.0002", Kind: cph.KindPermanent,
		Message: "Parameter: servers is invalid."}
}

// TestWholeBatchRejectedNamesChunkSize: CPH documents no limit on the
// servers of one call; if it has one, the 400 that rejects a whole batch
// tells the operator which flag to change.
func TestWholeBatchRejectedNamesChunkSize(t *testing.T) {
	_, store, enq, plan := startedRotation(t, "a", "b")
	ctx := context.Background()
	h := NewHandler(HandlerOptions{Store: store, API: rejectAPI{&failOnceAPI{}}, Limiter: &delayAfterFirst{}, Enqueuer: enq})
	data, _ := json.Marshal(SubmitPayload{Rotation: plan.Rotation.ID, Batch: 1, Servers: 2})
	if err := h.HandleSubmit(ctx, asynq.NewTask(TypeSubmit, data)); err != nil {
		t.Fatal(err)
	}
	err := store.Report(ctx, plan.Rotation.ID, func(row ReportRow) error {
		if row.Outcome != OutcomeFailed || row.ErrorCode != "CPS.0002" || !strings.Contains(row.ErrorMsg, "--chunk-size") {
			t.Errorf("row %+v: want failed with CPS.0002 and a message naming --chunk-size", row)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestClosedBatchRecordedByRerun: a submit that closed its batch (a 4xx,
// a cancel) and died before recording the outcomes leaves them with the
// checkpoint; the task's next run records them, so no server is lost.
func TestClosedBatchRecordedByRerun(t *testing.T) {
	rdb, store, enq, plan := startedRotation(t, "a", "b")
	ctx := context.Background()
	id := plan.Rotation.ID
	// The first run got as far as the checkpoint.
	if first, err := store.CloseBatch(ctx, id, 1, 2, OutcomeFailed, "CPS.0002", "rejected", time.Now()); err != nil || !first {
		t.Fatalf("CloseBatch = %v, %v", first, err)
	}
	h := NewHandler(HandlerOptions{Store: store, API: &failOnceAPI{}, Limiter: &delayAfterFirst{}, Enqueuer: enq})
	data, _ := json.Marshal(SubmitPayload{Rotation: id, Batch: 1, Servers: 2})
	if err := h.HandleSubmit(ctx, asynq.NewTask(TypeSubmit, data)); err != nil {
		t.Fatal(err)
	}
	rot, err := store.Rotation(ctx, id)
	if err != nil || !rot.Finished() || rot.Counts.Failed != 2 || rot.Counts.Running != 0 {
		t.Fatalf("rotation %+v, %v; want both servers failed with the stored outcome, finished", rot, err)
	}
	if ttl := rdb.TTL(ctx, store.metaKey(id)).Val(); ttl <= 0 {
		t.Fatalf("rotation record TTL %v: the re-run did not run the follow-ups", ttl)
	}
}
