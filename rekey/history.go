package rekey

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// HistoryKind is what happened to a rotation in one entry of its history.
type HistoryKind string

// History kinds, in the words of the history's JSON (docs/contracts.md).
const (
	HistoryCreated         HistoryKind = "created"          // started by Actor; Detail sums up the plan
	HistoryKeypairImported HistoryKind = "keypair_imported" // Request.KeypairImported: where the keypair went
	HistoryWaveStarted     HistoryKind = "wave_started"     // a wave's first chunks were enqueued
	HistoryPaused          HistoryKind = "paused"           // by Actor, after a wave, or waiting for its turn
	HistoryResumed         HistoryKind = "resumed"          // Detail names a new error budget
	HistoryHaltedBudget    HistoryKind = "halted_budget"    // the error budget was exceeded: Detail has the counts
	HistoryHalted          HistoryKind = "halted"           // the API refused the credentials, or the keypair is missing
	HistoryCancelled       HistoryKind = "cancelled"
	HistoryFinished        HistoryKind = "finished" // Detail: the final state, in words, and counts
	HistoryKeypairRetired  HistoryKind = "keypair_retired"
)

// SystemActor is the Actor of what the workers do on their own (start a
// wave, pause after one, halt, finish).
const SystemActor = tasks.SystemActor

// HistoryMax caps a rotation's history: its first entries and its latest
// are kept, and a gap in Seq shows where others were left out.
const HistoryMax = tasks.HistoryMax

// HistoryEntry is one entry of a rotation's history: when, what, who, and
// the figures that go with it.
type HistoryEntry struct {
	// Seq numbers the rotation's entries from 1, in order.
	Seq  int64       `json:"seq"`
	At   time.Time   `json:"at"`
	Kind HistoryKind `json:"kind"`
	// Actor is who did it: Request.Actor or WithActor's for a start and
	// the controls, SystemActor for the workers ("": nobody named).
	Actor  string `json:"actor,omitempty"`
	Detail string `json:"detail,omitempty"`
	// Rotation is the part an entry of a rotation across places is of
	// ("" for a rotation of one place).
	Rotation string `json:"rotation,omitempty"`
}

func historyOf(es []tasks.HistoryEntry, part string) []HistoryEntry {
	out := make([]HistoryEntry, len(es))
	for i, e := range es {
		out[i] = HistoryEntry{Seq: e.Seq, At: e.At, Kind: HistoryKind(e.Kind), Actor: e.Actor, Detail: e.Detail, Rotation: part}
	}
	return out
}

type actorKey struct{}

// WithActor returns a context whose writes through a Client (Start,
// Pause, Resume, Cancel, Rollback) are recorded in the rotations' history
// as actor's: a user name, a token's identity. The actor must pass
// ValidateActor, or the write is an *InputError.
func WithActor(ctx context.Context, actor string) context.Context {
	return context.WithValue(ctx, actorKey{}, actor)
}

// actorOf is ctx's actor (WithActor), checked.
func actorOf(ctx context.Context) (string, error) {
	a, _ := ctx.Value(actorKey{}).(string)
	if err := ValidateActor(a); err != nil {
		return "", err
	}
	return a, nil
}

// ValidateActor checks an actor's name: printable text (no control
// characters), at most 64 bytes. A bad name is an *InputError.
func ValidateActor(actor string) error {
	if err := tasks.ValidateActor(actor); err != nil {
		return &InputError{Err: err}
	}
	return nil
}

// History reads rotation id's history, oldest first: who created it and
// how (its keypair's import), each wave's start, pauses, resumes, halts,
// a cancel, the end and the old keypair's retire (ErrNotFound when no
// rotation has the id). A rotation across places gives its parts'
// entries together, in time order, each naming its part.
func (c *Client) History(ctx context.Context, id string) ([]HistoryEntry, error) {
	if err := tasks.ValidateRotationID(id); err != nil {
		return nil, &InputError{Err: err}
	}
	es, err := c.store.History(ctx, id)
	if err == nil {
		return historyOf(es, ""), nil
	}
	if !errors.Is(err, tasks.ErrNotFound) {
		return nil, wrap(err)
	}
	g, gerr := c.store.Group(ctx, id)
	if gerr != nil {
		return nil, wrap(err)
	}
	var out []HistoryEntry
	for _, p := range g.Parts {
		es, err := c.store.History(ctx, p)
		if err != nil {
			return nil, wrap(err)
		}
		out = append(out, historyOf(es, p)...)
	}
	// Stable: a part's entries of one millisecond keep their order.
	slices.SortStableFunc(out, func(a, b HistoryEntry) int { return a.At.Compare(b.At) })
	return out, nil
}
