package tasks

import (
	"context"
	"encoding/json"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
)

// schemaCounter counts the tasks a handler left to a newer release.
type schemaCounter struct {
	nopObserver
	mu    sync.Mutex
	kinds map[string]int
}

func (o *schemaCounter) UnknownSchema(kind string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.kinds[kind]++
}

// TestNewerSchemaIsLeftAlone: during a rolling upgrade a worker meets
// tasks and rotations a newer release wrote. It leaves them alone (no
// call, no write, no claim of the tick) and puts the task back without
// counting a failure; a record written before versions (no schema field)
// is version 1 and runs as before.
func TestNewerSchemaIsLeftAlone(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		recordV    string // the meta hash's schema ("": no field, as before versions)
		payloadV   int
		typ        string
		wantKind   string // "": the task runs
		wantCalled bool
	}{
		{"submit of a newer rotation", "99", SchemaVersion, TypeSubmit, "rotation", false},
		{"submit task of a newer release", "1", 99, TypeSubmit, "task", false},
		{"tick of a newer rotation", "99", SchemaVersion, TypeTick, "rotation", false},
		{"tick task of a newer release", "1", 99, TypeTick, "task", false},
		{"a record from before versions", "", 0, TypeSubmit, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rdb, store, enq, id := startTwo(t)
			var err error
			if tt.recordV == "" {
				err = rdb.HDel(ctx, store.metaKey(id), "schema").Err()
			} else {
				err = rdb.HSet(ctx, store.metaKey(id), "schema", tt.recordV).Err()
			}
			if err != nil {
				t.Fatal(err)
			}
			// A live chain whose first tick is due, as a checkpoint leaves it.
			if err := rdb.HSet(ctx, store.metaKey(id), "tgen", 1, "tseq", 0).Err(); err != nil {
				t.Fatal(err)
			}
			api := &failOnceAPI{}
			api.calls.Store(1) // answers at once
			obs := &schemaCounter{kinds: map[string]int{}}
			h := NewHandler(HandlerOptions{Store: store, API: api, Limiter: nopLimiter{}, Enqueuer: enq, Observer: obs})

			var payload any = SubmitPayload{Rotation: id, Batch: 1, Servers: 2, V: tt.payloadV}
			handle := h.HandleSubmit
			if tt.typ == TypeTick {
				payload, handle = TickPayload{Rotation: id, Gen: 1, Seq: 1, V: tt.payloadV}, h.HandleTick
			}
			data, err := json.Marshal(payload)
			if err != nil {
				t.Fatal(err)
			}
			err = handle(ctx, asynq.NewTask(tt.typ, data))
			rot, rerr := store.Rotation(ctx, id)
			if rerr != nil {
				t.Fatal(rerr)
			}
			if tt.wantKind == "" {
				if err != nil || rot.Schema != 1 || rot.Counts.Submitted != 2 {
					t.Fatalf("err %v, schema %d, counts %+v: want the batch submitted, schema 1", err, rot.Schema, rot.Counts)
				}
				return
			}
			if err == nil || IsFailure(err) {
				t.Fatalf("err %v: want the task put back, not counted as a failure", err)
			}
			if called := api.calls.Load() > 1; called != tt.wantCalled {
				t.Fatalf("UpdateKeypair called: %v, want %v", called, tt.wantCalled)
			}
			if rot.Counts.Submitted != 0 || rot.Counts.Pending != 2 {
				t.Fatalf("counts %+v: want the rotation untouched", rot.Counts)
			}
			if obs.kinds[tt.wantKind] != 1 {
				t.Fatalf("unknown schemas counted %v, want one %q", obs.kinds, tt.wantKind)
			}
			if tt.typ == TypeTick {
				if at, _ := rdb.HGet(ctx, store.metaKey(id), "tick_running").Result(); at == "1" {
					t.Fatal("the tick was claimed: the newer release's chain would find it taken")
				}
			}
		})
	}
}
