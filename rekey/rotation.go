package rekey

import (
	"context"
	"errors"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// State is a rotation's life-cycle state. The words are the same in the
// commands' output, the completion event and the metrics.
type State string

// Rotation states. A rotation is Running from its start and ends
// Succeeded (every server succeeded or was skipped), CompletedWithErrors
// (some failed, within the error budget), Failed (the budget halted it) or
// Cancelled. A Failed rotation that has not finished was halted by its
// budget, or because the CPH API refused its credentials (401 or 403;
// Reason names the API and the IAM action), and waits for Resume (with a
// larger budget, or once the credentials are fixed) or Cancel.
const (
	StateRunning             State = "running"
	StatePaused              State = "paused"
	StateSucceeded           State = "succeeded"
	StateCompletedWithErrors State = "completed_with_errors"
	StateFailed              State = "failed"
	StateCancelled           State = "cancelled"
)

// Counts are a rotation's counters. Pending, Running, Succeeded, Failed,
// Skipped and Cancelled partition the servers (they add up to Total).
type Counts struct {
	Total     int64 `json:"total"`
	Pending   int64 `json:"pending"` // not submitted yet, or waiting for a retry
	Running   int64 `json:"running"` // submitted, job not ended or keypair not read back yet
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	Skipped   int64 `json:"skipped"` // already on the keypair when planned
	Cancelled int64 `json:"cancelled"`
	// Verifying counts the Running servers whose job succeeded and whose
	// keypair is still to be read back.
	Verifying int64 `json:"verifying"`
	// Submitted and Retried count server submissions (retries repeat them).
	Submitted int64 `json:"submitted"`
	Retried   int64 `json:"retried"`
	// Resubmitted counts batch submissions repeated because an earlier
	// call's outcome was unknown (a worker died between the call and its
	// checkpoint).
	Resubmitted int64 `json:"resubmitted"`
}

// Done is the number of servers in a terminal outcome.
func (c Counts) Done() int64 { return c.Succeeded + c.Failed + c.Skipped + c.Cancelled }

// add returns c and d summed.
func (c Counts) add(d Counts) Counts {
	return Counts{Total: c.Total + d.Total, Pending: c.Pending + d.Pending, Running: c.Running + d.Running,
		Succeeded: c.Succeeded + d.Succeeded, Failed: c.Failed + d.Failed, Skipped: c.Skipped + d.Skipped,
		Cancelled: c.Cancelled + d.Cancelled, Verifying: c.Verifying + d.Verifying, Submitted: c.Submitted + d.Submitted,
		Retried: c.Retried + d.Retried, Resubmitted: c.Resubmitted + d.Resubmitted}
}

func countsOf(c tasks.Counts) Counts {
	return Counts{Total: c.Total, Pending: c.Pending, Running: c.Running, Succeeded: c.Succeeded, Failed: c.Failed,
		Skipped: c.Skipped, Cancelled: c.Cancelled, Verifying: c.Verifying, Submitted: c.Submitted, Retried: c.Retried,
		Resubmitted: c.Resubmitted}
}

// Rotation is a rotation as Redis holds it: what it was asked to do and
// where it is.
type Rotation struct {
	ID      string
	Keypair string
	State   State
	// Reason says why the rotation is paused or halted, or how it ended.
	Reason string
	// Wave is the canary wave being submitted (1-based) of Waves.
	Wave, Waves int
	// WavePlan is each wave's last chunk and size, in order; WaveOpen
	// counts the current wave's servers not terminal yet.
	WavePlan []Wave
	WaveOpen int
	// MaxErrors is the error budget in servers.
	MaxErrors   int
	ChunkSize   int
	Chunks      int // first-attempt UpdateKeypair batches
	Batches     int // UpdateKeypair batches so far: the chunks, then retry batches
	MaxAttempts int
	Verify      bool
	// PauseAfterWave pauses the rotation whenever a wave has ended.
	PauseAfterWave bool
	// Retention is how long the records are kept after the end.
	Retention time.Duration
	// Schema is the version of the record's layout; a record of a later
	// version than this release writes was written by a newer release,
	// whose workers move it (see README, Upgrading).
	Schema     int
	CreatedAt  time.Time
	FinishedAt time.Time // zero until the rotation has finished
	Counts     Counts
	// Region and ProjectID are the rotation's place: "" is the workers'
	// own region and project.
	Region, ProjectID string
	// Group is the rotation across places this one is a part of ("":
	// none).
	Group string
	// Parts are the rotations, one a (region, project), of a rotation
	// across places; its figures are theirs summed. Nil for one place.
	Parts []*Rotation
	// Retired is the outcome of the last Retire of the rotation's old
	// keypairs, place by place (a rotation across places: its parts'),
	// nil before any. RetireDue is when a scheduled retire is due (zero:
	// none waiting), and RetireError why the last scheduled run failed.
	Retired     *Retirement
	RetireDue   time.Time
	RetireError string
	// MaxErrorsTotal is a rotation across places' budget as a whole, in
	// servers (-1: none; 0 for one place), and OnRegionHalt what its
	// parts do when one halts.
	MaxErrorsTotal int
	OnRegionHalt   HaltPolicy
}

// Wave is a canary wave as planned: chunks up to LastChunk (from the
// previous wave's last chunk + 1), of Servers servers.
type Wave struct {
	LastChunk, Servers int
}

// Finished reports whether every server of the rotation is terminal.
func (r *Rotation) Finished() bool { return !r.FinishedAt.IsZero() }

// Halted reports whether the error budget or refused credentials stopped
// the rotation before it finished: it waits for Resume or Cancel.
func (r *Rotation) Halted() bool { return r.State == StateFailed && !r.Finished() }

// Waiting reports whether the rotation is a part of a rotation across
// places waiting for its turn (Request.MaxConcurrentRegions): the
// workers start it as parts before it finish.
func (r *Rotation) Waiting() bool {
	return r.Group != "" && r.State == StatePaused && r.Reason == tasks.WaitReason && !r.Finished()
}

// NewerRelease reports whether a release newer than this one wrote the
// record (Schema): that release's workers move the rotation, this one's
// leave it alone.
func (r *Rotation) NewerRelease() bool { return r.Schema > tasks.SchemaVersion }

func rotationOf(r *tasks.Rotation) *Rotation {
	waves := make([]Wave, len(r.Waves))
	for i, w := range r.Waves {
		waves[i] = Wave{LastChunk: w.LastChunk, Servers: w.Servers}
	}
	return &Rotation{ID: r.ID, Keypair: r.Keypair, State: State(r.State), Reason: r.Reason, Wave: r.Wave, Waves: len(r.Waves),
		WavePlan: waves, WaveOpen: r.WaveOpen, MaxErrors: r.MaxErrors, ChunkSize: r.ChunkSize, Chunks: r.Chunks, Batches: r.Batches,
		MaxAttempts: r.MaxAttempts, Verify: r.Verify, PauseAfterWave: r.PauseAfterWave, Retention: r.Retention, Schema: r.Schema,
		CreatedAt: r.CreatedAt, FinishedAt: r.FinishedAt, Counts: countsOf(r.Counts),
		Region: r.Region, ProjectID: r.ProjectID, Group: r.Group,
		Retired: retiredOf(r.ID, r.Retired), RetireDue: r.RetireDue, RetireError: r.RetireError}
}

// retiredOf is the Retirement of rotation id whose one place's outcome is
// p (nil: none).
func retiredOf(id string, p *tasks.RetiredPlace) *Retirement {
	if p == nil {
		return nil
	}
	return &Retirement{Rotation: id, At: p.At, Places: []RetiredPlace{retiredPlaceOf(p)}}
}

// ValidateRotationID checks a rotation id: 1-64 bytes of letters, digits,
// '.', '_' and '-', starting with a letter or digit (ids become part of
// Redis hash tags and asynq task ids). A bad id is an *InputError.
func ValidateRotationID(id string) error {
	if err := tasks.ValidateRotationID(id); err != nil {
		return &InputError{Err: err}
	}
	return nil
}

// Rotation reads a rotation's record and counters: ErrNotFound when no
// rotation has the id. A rotation across places is its parts summed, with
// each part in Parts.
func (c *Client) Rotation(ctx context.Context, id string) (*Rotation, error) {
	if err := tasks.ValidateRotationID(id); err != nil {
		return nil, &InputError{Err: err}
	}
	r, err := c.store.Rotation(ctx, id)
	if errors.Is(err, tasks.ErrNotFound) {
		g, gerr := c.store.Group(ctx, id)
		if gerr != nil {
			return nil, wrap(err)
		}
		var parts []*Rotation
		for _, pid := range g.Parts {
			p, err := c.store.Rotation(ctx, pid)
			if err != nil {
				return nil, wrap(err)
			}
			parts = append(parts, rotationOf(p))
		}
		return groupRotation(g, parts), nil
	}
	if err != nil {
		return nil, wrap(err)
	}
	return rotationOf(r), nil
}

// Rotations lists rotations, newest first, at most limit of them.
func (c *Client) Rotations(ctx context.Context, limit int) ([]*Rotation, error) {
	rs, _, err := c.RotationsPage(ctx, 0, limit)
	return rs, err
}

// RotationsPage lists rotations newest first, skipping offset of them
// and returning at most limit, with the number of rotations listed in
// all (an expired rotation is dropped from the list as it is met, so
// total may shrink from one page to the next).
func (c *Client) RotationsPage(ctx context.Context, offset, limit int) (rots []*Rotation, total int, err error) {
	if limit < 1 {
		return nil, 0, badInput("limit %d: want at least 1", limit)
	}
	if offset < 0 {
		return nil, 0, badInput("offset %d: want 0 or more", offset)
	}
	rs, total, err := c.store.RotationsPage(ctx, offset, limit)
	if err != nil {
		return nil, 0, wrap(err)
	}
	rots = make([]*Rotation, len(rs))
	for i, r := range rs {
		rots[i] = rotationOf(r)
	}
	return rots, total, nil
}
