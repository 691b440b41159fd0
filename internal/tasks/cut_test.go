package tasks

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

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
// on a sound one: the second cancel succeeds, and the rotation ends
// cancelled with every server reported once and one completion event,
// though its third wave was never enqueued and its closing takes three
// scripts.
func TestCancelCutShortIsRunAgain(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
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
			cutEnq := asynq.NewClientFromRedisClient(cut)
			_, _, cutErr := Cancel(ctx, NewStore(cut, ""), cutEnq, id, TaskOptions{}, time.Now())
			// asynq does not wrap its Redis errors: the cut is known by its text.
			if cutErr != nil && !strings.Contains(cutErr.Error(), errCut.Error()) {
				t.Fatalf("cut after %d round trips: Cancel: %v; want the cut's error", n, cutErr)
			}

			sound := r.Client(t)
			rot, _, err := Cancel(ctx, s, asynq.NewClientFromRedisClient(sound), id, TaskOptions{}, time.Now())
			if err != nil {
				t.Fatalf("cut after %d round trips: cancel run again: %v", n, err)
			}
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
	})
}
