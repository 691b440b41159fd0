package tasks

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Task types.
const (
	TypeSubmit   = "rotation:submit"
	TypePoll     = "rotation:poll"
	TypeFinished = "rotation:finished"
)

// Queues. Polls outweigh submits so chunks already submitted are finished
// before new ones start; events are for the tools that watch rotations.
const (
	QueuePoll   = "rekey-poll"
	QueueSubmit = "rekey-submit"
	QueueEvents = "rekey-events"
)

// Queues returns the worker's queue weights.
func Queues() map[string]int {
	return map[string]int{QueuePoll: 6, QueueSubmit: 3}
}

// SubmitPayload is the payload of a submit task: one chunk attempt. The
// servers themselves are in Redis, frozen when the chunk attempt was made.
type SubmitPayload struct {
	Rotation string `json:"rotation"`
	Chunk    int    `json:"chunk"`
	Attempt  int    `json:"attempt"`
	Servers  int    `json:"servers"`
}

// PollPayload is the payload of a poll task.
type PollPayload struct {
	Rotation string `json:"rotation"`
	Chunk    int    `json:"chunk"`
	Attempt  int    `json:"attempt"`
	Round    int    `json:"round"`
}

// SubmitTaskID is the deterministic ID of a chunk attempt's submit task, so
// enqueueing it twice is refused by asynq.
func SubmitTaskID(rotation string, chunk, attempt int) string {
	return rotation + ":" + strconv.Itoa(chunk) + ":" + strconv.Itoa(attempt)
}

// PollTaskID is the deterministic ID of a poll round.
func PollTaskID(rotation string, chunk, attempt, round int) string {
	return SubmitTaskID(rotation, chunk, attempt) + ":poll:" + strconv.Itoa(round)
}

// FinishedTaskID is the ID of a rotation's completion event.
func FinishedTaskID(rotation string) string { return rotation + ":finished" }

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
