package tasks

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// SchemaVersion is the version of rotation records and task payloads
// this release writes. It reads every version up to it (records and
// payloads that carry none are version 1); a rotation or task of a later
// version, written by a newer release during a rolling upgrade, is left
// to the workers that know it (see Handler.unknownSchema).
const SchemaVersion = 1

// Task types.
const (
	TypeSubmit   = "rotation:submit"
	TypeTick     = "rotation:tick"
	TypeFinished = "rotation:finished"
)

// Queues. Work on batches already started (ticks: polls, verification;
// the submits of retry batches) outweighs first attempts, so started
// batches finish before new ones start; events are for the tools that
// watch rotations.
const (
	QueuePoll   = "rekey-poll"
	QueueSubmit = "rekey-submit"
	QueueEvents = "rekey-events"
)

// Queues returns the worker's queue weights.
func Queues() map[string]int {
	return map[string]int{QueuePoll: 6, QueueSubmit: 3}
}

// TaskCheckInterval is how often an idle worker looks for new tasks
// (asynq.Config.TaskCheckInterval). asynq's default, 1 s (slept as
// 0.5–1.5 s), held a rotation's first chunks about half a second after its
// start, and a wave's last ones as long. 100 ms costs an idle worker about
// 50 Redis commands a second more (a look runs a script per queue), a
// small share of what one Redis serves.
const TaskCheckInterval = 100 * time.Millisecond

// DelayedTaskCheckInterval is how often a worker moves tasks whose time has
// come to their queue (asynq.Config.DelayedTaskCheckInterval): the ticks
// it schedules, and the submit tasks the fleet limiter put back (a wait
// past its MaxWait; they come back in tens of milliseconds). At 1 s a
// put-back task was out of the quota's stream for half a second on
// average, a gap in the submits that cost a rotation over four regions a
// fifth of its time (rekeybench --scenario regions: 1.17-1.24 × a
// region's bound, 1.07-1.10 at 200 ms).
//
// asynq keeps due times in whole seconds, so a task due within a second
// comes up to a second early (at 1 s it came as early, or as late): a
// tick that comes early finds its work due within loopGap and waits for
// it, and a put-back submit waits for its token again.
const DelayedTaskCheckInterval = 200 * time.Millisecond

// SubmitPayload is the payload of a submit task: one batch. Batches 1 to
// Rotation.Chunks are the planned chunks' first attempts; later ones gather
// retries. The servers themselves are in Redis, frozen when the batch was
// made.
type SubmitPayload struct {
	Rotation string `json:"rotation"`
	Batch    int    `json:"batch"`
	Servers  int    `json:"servers"`
	V        int    `json:"v,omitempty"` // SchemaVersion of the release that enqueued it (0: 1)
}

// TickPayload is the payload of a rotation's tick: one round of its
// driver, which polls the batches whose jobs run, verifies, and gathers
// retries. Gen and Seq place it in the rotation's one chain of ticks.
type TickPayload struct {
	Rotation string `json:"rotation"`
	Gen      int    `json:"gen"`
	Seq      int    `json:"seq"`
	V        int    `json:"v,omitempty"` // SchemaVersion of the release that enqueued it (0: 1)
}

// Task IDs are deterministic, so enqueueing a task twice is refused by
// asynq. They start with what tells tasks apart, because asynqmon shows an
// ID up to its first "-" (and rotation ids start "r-").

// SubmitTaskID is the ID of a batch's submit task.
func SubmitTaskID(rotation string, batch int) string {
	return "submit." + strconv.Itoa(batch) + "-" + rotation
}

// TickTaskID is the ID of a rotation's tick.
func TickTaskID(rotation string, gen, seq int) string {
	return "tick." + strconv.Itoa(gen) + "." + strconv.Itoa(seq) + "-" + rotation
}

// FinishedTaskID is the ID of a rotation's completion event.
func FinishedTaskID(rotation string) string { return "finished-" + rotation }

func marshal(v any) ([]byte, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode payload: %w", err)
	}
	return data, nil
}

func decode(data []byte, v any, what string) error {
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode %s payload: %w", what, err)
	}
	return nil
}
