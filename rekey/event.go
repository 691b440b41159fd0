package rekey

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// The completion event: when a rotation finishes, exactly one task of
// type EventTaskType with an Event as its JSON payload is enqueued on the
// EventQueue queue, or EventQueueIn(namespace) for workers of another
// namespace (task id EventTaskID(rotation), kept for the rotation's
// retention). cph-rekey's workers do not consume that queue; tools do.
const (
	EventQueue    = "rekey-events"
	EventTaskType = "rotation:finished"
	// EventVersion is the version of the event contract
	// (docs/contracts.md, docs/schema/event.v1.json) this package writes
	// and reads.
	EventVersion = 1
)

// EventQueueIn is the event queue of the workers of namespace
// (Options.Namespace): EventQueue in the default namespace,
// "<namespace>.rekey-events" in another.
func EventQueueIn(namespace string) string {
	return tasks.Namespace(namespace).Queue(tasks.QueueEvents)
}

// EventTaskID is the asynq task id of rotation's completion event
// ("finished-<rotation>"), for asynq's Inspector.
func EventTaskID(rotation string) string { return tasks.FinishedTaskID(rotation) }

// Event is the completion event's payload: how a rotation ended. Its JSON
// form is the event contract, version EventVersion.
type Event struct {
	// Version is the contract version; events of workers older than the
	// contract have none (0) and the same fields.
	Version  int    `json:"version"`
	Rotation string `json:"rotation"`
	// State is how the rotation ended: succeeded, completed_with_errors,
	// failed (halted by its error budget, then cancelled or finished) or
	// cancelled.
	State State `json:"state"`
	// Reason says why a rotation failed or was cancelled, when known.
	Reason     string    `json:"reason,omitempty"`
	Keypair    string    `json:"keypair"`
	Counts     Counts    `json:"counts"`
	CreatedAt  time.Time `json:"created_at"`
	FinishedAt time.Time `json:"finished_at"`
	// Region and ProjectID are the rotation's place (absent: the workers'
	// own). A rotation across places sends an event for each part as it
	// ends, whose Group is the rotation's id, and one more for the
	// rotation as a whole when its last part has ended: its Parts name
	// them all, and its figures are theirs summed (a tool that wants one
	// event a rotation skips those with a Group).
	Region    string      `json:"region,omitempty"`
	ProjectID string      `json:"project_id,omitempty"`
	Group     string      `json:"group,omitempty"`
	Parts     []PartEvent `json:"parts,omitempty"`
	// History is the rotation's history up to its end, oldest first (see
	// Client.History; absent from events of workers that kept none, and
	// from a rotation across places' own event: its parts' carry theirs).
	// Its last entry is the finish.
	History []HistoryEntry `json:"history,omitempty"`
}

// PartEvent is how one part of a rotation across places ended, in the
// rotation's own event.
type PartEvent struct {
	Rotation  string `json:"rotation"`
	Region    string `json:"region,omitempty"`
	ProjectID string `json:"project_id,omitempty"`
	State     State  `json:"state"`
	Counts    Counts `json:"counts"`
}

// DecodeEvent decodes a completion event's payload. Unknown fields are
// ignored (fields are added without a version change); an event of a
// version this package does not know is ErrUnsupportedVersion.
func DecodeEvent(payload []byte) (*Event, error) {
	var e Event
	if err := json.Unmarshal(payload, &e); err != nil {
		return nil, fmt.Errorf("decode %s event: %w", EventTaskType, err)
	}
	if e.Version < 0 || e.Version > EventVersion {
		return nil, fmt.Errorf("decode %s event of rotation %q: version %d: %w (this package reads up to %d)",
			EventTaskType, e.Rotation, e.Version, ErrUnsupportedVersion, EventVersion)
	}
	if e.Rotation == "" {
		return nil, fmt.Errorf("decode %s event: no rotation", EventTaskType)
	}
	return &e, nil
}

// EventHandler returns an asynq handler of completion events that decodes
// each and calls fn. Register it for EventTaskType on a server that
// consumes EventQueue:
//
//	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{rekey.EventQueue: 1}})
//	mux := asynq.NewServeMux()
//	mux.Handle(rekey.EventTaskType, rekey.EventHandler(func(ctx context.Context, e *rekey.Event) error { … }))
//	srv.Run(mux)
//
// An error from fn makes asynq retry the event; a payload that cannot be
// decoded is not retried (asynq.SkipRetry), since it never will be.
func EventHandler(fn func(ctx context.Context, e *Event) error) asynq.Handler {
	return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
		if t.Type() != EventTaskType {
			return fmt.Errorf("task type %q is not %s: %w", t.Type(), EventTaskType, asynq.SkipRetry)
		}
		e, err := DecodeEvent(t.Payload())
		if err != nil {
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		return fn(ctx, e)
	})
}
