package rekey

import (
	"context"
	"errors"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// Pause stops new UpdateKeypair calls of rotation id on every worker at
// once (workers check the state atomically with marking each call);
// batches already submitted are polled to the end.
//
// A rotation across places pauses every part that has not finished; a
// part's own id pauses that part alone. The history names the context's
// actor (WithActor), as every control's does.
func (c *Client) Pause(ctx context.Context, id string) error {
	actor, err := actorOf(ctx)
	if err != nil {
		return err
	}
	parts, group, err := c.partsOf(ctx, id)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if group && c.waiting(ctx, p) {
			continue // it stays waiting for its turn
		}
		if err := c.store.SetState(ctx, p, tasks.StatePaused, "paused by an operator", actor); err != nil && !(group && c.ended(ctx, p)) {
			return wrap(err)
		}
	}
	return nil
}

// ended reports whether rotation id has finished, so a control of its
// group passes it by.
func (c *Client) ended(ctx context.Context, id string) bool {
	r, err := c.store.Rotation(ctx, id)
	return err == nil && r.Finished()
}

// waiting reports whether part id waits for its turn, which a control of
// its group leaves to the workers.
func (c *Client) waiting(ctx context.Context, id string) bool {
	r, err := c.store.Rotation(ctx, id)
	return err == nil && r.Waiting()
}

// ResumeOptions tune Resume.
type ResumeOptions struct {
	// MaxErrors, when set, replaces the error budget (a percentage is of
	// the servers the rotation submits). Resuming a rotation halted by its
	// budget is refused while its failures are still beyond the budget.
	MaxErrors *Size
	// MaxErrorsTotal, when set, replaces the budget of a rotation across
	// places as a whole (a percentage is of the servers its parts submit);
	// resuming is refused while its failures are still beyond it.
	MaxErrorsTotal *Size
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
//
// A rotation across places resumes every part that has not finished (a
// new MaxErrors is each part's budget) and lifts the halt of the whole
// (its rotation-wide budget, or a part's halt under HaltAll): it is
// refused, and nothing resumed, while a part's failures or the whole's
// are still beyond their budgets. A part's id resumes that part.
func (c *Client) Resume(ctx context.Context, id string, opts ResumeOptions) (*Resumed, error) {
	actor, err := actorOf(ctx)
	if err != nil {
		return nil, err
	}
	parts, group, err := c.partsOf(ctx, id)
	if err != nil {
		return nil, err
	}
	var budget *tasks.Size
	if opts.MaxErrors != nil {
		b := opts.MaxErrors.internal()
		budget = &b
	}
	if opts.MaxErrorsTotal != nil && !group {
		return nil, badInput("rotation %s is not across places: its budget is MaxErrors (--max-errors)", id)
	}
	if !group {
		if err := c.partOfHaltedGroup(ctx, id); err != nil {
			return nil, err
		}
	}
	if group {
		for _, p := range parts {
			rot, err := c.store.Rotation(ctx, p)
			if err != nil {
				return nil, wrap(err)
			}
			if err := tasks.ResumeRefused(rot, budget); err != nil {
				return nil, &InputError{Err: err}
			}
		}
		var total *tasks.Size
		if opts.MaxErrorsTotal != nil {
			b := opts.MaxErrorsTotal.internal()
			total = &b
		}
		if err := tasks.ResumeGroup(ctx, c.store, c.enq, id, total, c.tasks); err != nil {
			return nil, wrap(err)
		}
	}
	res := &Resumed{}
	for _, p := range parts {
		if group && (c.ended(ctx, p) || c.waiting(ctx, p)) {
			continue
		}
		rot, n, err := tasks.Resume(ctx, c.store, c.enq, p, budget, actor, c.tasks)
		if err != nil {
			return nil, wrap(err)
		}
		res.Rotation, res.Enqueued = rotationOf(rot), res.Enqueued+n
	}
	if group {
		res.Rotation, err = c.Rotation(ctx, id)
	}
	return res, err
}

// partOfHaltedGroup refuses to resume part alone while the rotation
// across places it belongs to is halted: the next look at the group would
// halt it again. The whole rotation is resumed instead. A part that has
// ended is left to Resume's own refusal (resuming the whole skips it).
func (c *Client) partOfHaltedGroup(ctx context.Context, part string) error {
	rot, err := c.store.Rotation(ctx, part)
	if err != nil || rot.Group == "" || rot.Finished() || rot.State == tasks.StateCancelled {
		return wrap(err)
	}
	g, err := c.store.Group(ctx, rot.Group)
	if errors.Is(err, tasks.ErrNotFound) {
		return nil
	}
	if err != nil {
		return wrap(err)
	}
	if g.Halted == "" {
		return nil
	}
	return badInput("rotation %s is a part of %s, which is halted (%s): resume %s, the whole rotation, or cancel it",
		part, g.ID, g.Halted, g.ID)
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
//
// A rotation across places cancels every part that has not finished; a
// part's id cancels that part.
func (c *Client) Cancel(ctx context.Context, id string) (*Cancelled, error) {
	actor, err := actorOf(ctx)
	if err != nil {
		return nil, err
	}
	parts, group, err := c.partsOf(ctx, id)
	if err != nil {
		return nil, err
	}
	res := &Cancelled{}
	for _, p := range parts {
		if group && c.ended(ctx, p) {
			continue
		}
		rot, closed, err := tasks.Cancel(ctx, c.store, c.enq, p, actor, c.tasks, time.Now())
		if err != nil {
			return nil, wrap(err)
		}
		res.Rotation, res.Closed = rotationOf(rot), res.Closed+closed
	}
	if group {
		res.Rotation, err = c.Rotation(ctx, id)
	}
	return res, err
}

// Discarded is the plan Discard removed.
type Discarded struct {
	// Chunks and Servers are what the plan would have submitted, Skipped
	// the servers it found on their target keypair.
	Chunks, Servers, Skipped int
}

// Discard removes what a start of rotation id left behind when it was cut
// short before the rotation was created: its frozen plan and its chunks.
// It is the way out when starting again is refused (ErrConflict) because
// the fleet has changed since the interrupted start froze its plan: after
// Discard, a start may use the id for the plan it makes now. Nothing of
// the discarded plan was enqueued or submitted: tasks are enqueued only
// once the rotation exists. A rotation that exists is never discarded
// (ErrConflict: cancel it instead); an id with nothing to discard returns
// ErrNotFound. A Discard cut short can be run again.
func (c *Client) Discard(ctx context.Context, id string) (*Discarded, error) {
	size, err := c.store.Discard(ctx, id)
	if err != nil {
		return nil, wrap(err)
	}
	return &Discarded{Chunks: size.Chunks, Servers: size.Servers, Skipped: size.Skipped}, nil
}
