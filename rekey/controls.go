package rekey

import (
	"context"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// Pause stops new UpdateKeypair calls of rotation id on every worker at
// once (workers check the state atomically with marking each call);
// batches already submitted are polled to the end.
func (c *Client) Pause(ctx context.Context, id string) error {
	if err := tasks.ValidateRotationID(id); err != nil {
		return &InputError{Err: err}
	}
	return wrap(c.store.SetState(ctx, id, tasks.StatePaused, "paused by an operator"))
}

// ResumeOptions tune Resume.
type ResumeOptions struct {
	// MaxErrors, when set, replaces the error budget (a percentage is of
	// the servers the rotation submits). Resuming a rotation halted by its
	// budget is refused while its failures are still beyond the budget.
	MaxErrors *Size
}

// Resumed is what Resume did.
type Resumed struct {
	Rotation *Rotation
	// Enqueued counts the submit tasks of the current wave enqueued now
	// (up to 16: each chunk submitted enqueues the next).
	Enqueued int
}

// Resume sets a paused rotation, or one halted by its error budget or by
// refused credentials, running again, starts the next wave if the current one has ended, and
// enqueues what the wave has left to submit.
func (c *Client) Resume(ctx context.Context, id string, opts ResumeOptions) (*Resumed, error) {
	if err := tasks.ValidateRotationID(id); err != nil {
		return nil, &InputError{Err: err}
	}
	var budget *tasks.Size
	if opts.MaxErrors != nil {
		b := opts.MaxErrors.internal()
		budget = &b
	}
	rot, n, err := tasks.Resume(ctx, c.store, c.enq, id, budget, c.tasks)
	if err != nil {
		return nil, wrap(err)
	}
	return &Resumed{Rotation: rotationOf(rot), Enqueued: n}, nil
}

// Cancelled is what Cancel did.
type Cancelled struct {
	Rotation *Rotation
	// Closed counts the servers recorded cancelled now: every server not
	// submitted yet, retries waiting for their backoff included. Servers
	// whose calls are in flight (Rotation.Counts.Running) are recorded as
	// their jobs end.
	Closed int
}

// Cancel cancels rotation id at once: every server not yet submitted is
// recorded cancelled; in-flight jobs are polled to their end and their
// failures are not retried. When nothing is running the rotation finishes
// at once (state cancelled, completion event sent).
func (c *Client) Cancel(ctx context.Context, id string) (*Cancelled, error) {
	if err := tasks.ValidateRotationID(id); err != nil {
		return nil, &InputError{Err: err}
	}
	rot, closed, err := tasks.Cancel(ctx, c.store, c.enq, id, c.tasks, time.Now())
	if err != nil {
		return nil, wrap(err)
	}
	return &Cancelled{Rotation: rotationOf(rot), Closed: closed}, nil
}
