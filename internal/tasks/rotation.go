package tasks

import (
	"fmt"
	"regexp"
	"strings"
	"time"
)

// State is the life-cycle state of a rotation.
type State string

// Rotation states. A rotation is Running from the moment it is created; it
// ends Succeeded when every server succeeded or was skipped, Failed when some
// server failed, and Cancelled when an operator cancelled it.
const (
	StateRunning   State = "running"
	StatePaused    State = "paused"
	StateCancelled State = "cancelled"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed"
)

// Outcome is a server's terminal outcome in a rotation.
type Outcome string

// Outcomes. Pending and Running are not terminal; they appear in reports
// of rotations still in progress.
const (
	OutcomePending   Outcome = "pending"
	OutcomeRunning   Outcome = "running"
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeFailed    Outcome = "failed"
	OutcomeSkipped   Outcome = "skipped"
	OutcomeCancelled Outcome = "cancelled"
)

// Counts are a rotation's counters. Pending, Running, Succeeded, Failed,
// Skipped and Cancelled partition the servers (they add up to Total);
// Submitted and Retried count server submissions, which retries repeat.
type Counts struct {
	Total     int64 `json:"total"`
	Pending   int64 `json:"pending"`
	Running   int64 `json:"running"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	Skipped   int64 `json:"skipped"`
	Cancelled int64 `json:"cancelled"`
	Submitted int64 `json:"submitted"`
	Retried   int64 `json:"retried"`
	// Resubmitted counts chunk submissions repeated because an earlier
	// call's outcome was unknown (a worker died, or the connection dropped,
	// between the API call and the checkpoint).
	Resubmitted int64 `json:"resubmitted"`
}

// Done is the number of servers in a terminal outcome.
func (c Counts) Done() int64 { return c.Succeeded + c.Failed + c.Skipped + c.Cancelled }

// Rotation is a rotation's record: what it was asked to do and where it is.
type Rotation struct {
	ID          string    `json:"id"`
	Keypair     string    `json:"keypair"`
	ChunkSize   int       `json:"chunk_size"`
	Chunks      int       `json:"chunks"`
	MaxAttempts int       `json:"max_attempts"`
	Fingerprint string    `json:"fingerprint"`
	State       State     `json:"state"`
	CreatedAt   time.Time `json:"created_at"`
	FinishedAt  time.Time `json:"finished_at,omitzero"`
	Counts      Counts    `json:"counts"`
}

// Finished reports whether every server of the rotation is terminal.
func (r *Rotation) Finished() bool { return !r.FinishedAt.IsZero() }

// Summary is the payload of a rotation:finished task.
type Summary struct {
	Rotation   string    `json:"rotation"`
	State      State     `json:"state"`
	Keypair    string    `json:"keypair"`
	Counts     Counts    `json:"counts"`
	CreatedAt  time.Time `json:"created_at"`
	FinishedAt time.Time `json:"finished_at"`
}

var rotationIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateRotationID checks a rotation id. Ids become part of Redis hash
// tags and asynq task IDs, so braces, colons and spaces are refused.
func ValidateRotationID(id string) error {
	if !rotationIDPattern.MatchString(id) {
		return fmt.Errorf("rotation id %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// Entry is one server of a chunk: its id, the keypair it had when the
// rotation was planned (if known) and the keypair it must end on.
type Entry struct {
	ServerID   string
	OldKeypair string
	Keypair    string
}

// encodeEntries packs entries as tab-separated lines: compact in Redis, and
// safe because server ids and keypair names never contain tabs or newlines
// (internal/targets rejects them).
func encodeEntries(es []Entry) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(e.ServerID)
		b.WriteByte('\t')
		b.WriteString(e.OldKeypair)
		b.WriteByte('\t')
		b.WriteString(e.Keypair)
		b.WriteByte('\n')
	}
	return b.String()
}

func decodeEntries(s string) ([]Entry, error) {
	var es []Entry
	for line := range strings.Lines(s) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(f) != 3 {
			return nil, fmt.Errorf("corrupt chunk entry %q", line)
		}
		es = append(es, Entry{ServerID: f[0], OldKeypair: f[1], Keypair: f[2]})
	}
	return es, nil
}
