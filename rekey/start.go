package rekey

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// Started is what Start did.
type Started struct {
	// Rotation is the rotation as it is now.
	Rotation *Rotation
	// Created is false when the rotation already existed: the same Request
	// was started before, and nothing was enqueued twice.
	Created bool
	// Enqueued counts the submit tasks enqueued now: the first wave's
	// first chunks, up to 16; each chunk submitted enqueues the next, so
	// chunks are submitted in the list's order and a huge wave starts at
	// once.
	Enqueued int
	// Plan is what the start was planned as.
	Plan *Plan
}

// Start plans r (see Plan), freezes the targets into a rotation in Redis
// and enqueues its first wave; the workers take it from there. Starting
// the same Request again names the same rotation and enqueues nothing
// twice. Errors: *InputError, *APIError (reading the fleet), ErrConflict
// (the id names a rotation of other targets or options),
// ErrRedisUnavailable.
func (c *Client) Start(ctx context.Context, r Request) (*Started, error) {
	p, err := c.Plan(ctx, r)
	if err != nil {
		return nil, err
	}
	if p.Parts != nil {
		return c.startGroup(ctx, p)
	}
	opts := c.tasks
	opts.Retention = p.plan.Rotation.Retention
	st, err := tasks.Start(ctx, c.store, c.enq, p.plan, opts, time.Now())
	if err != nil {
		return nil, wrap(err)
	}
	return &Started{Rotation: rotationOf(st.Rotation), Created: st.Created, Enqueued: st.Enqueued, Plan: p}, nil
}

// RollbackRequest returns the Request that puts every server rotation id
// changed (outcome succeeded) back on the keypair it had before, as the
// report recorded it; Start or Plan it. r gives the options (its Keypair
// and Targets are replaced; an empty ID becomes "<id>-rollback"). The
// rotation must have finished, must have recorded old keypairs (it was
// not started with NoSkipMatching), and its old keypairs must not have been
// retired (Retire deleted none); otherwise the error is an *InputError
// saying which.
func (c *Client) RollbackRequest(ctx context.Context, id string, r Request) (Request, error) {
	if err := tasks.ValidateRotationID(id); err != nil {
		return r, &InputError{Err: err}
	}
	if r.ID == "" {
		r.ID = id + "-rollback"
		if err := tasks.ValidateRotationID(r.ID); err != nil {
			return r, badInput("rollback id %q is too long: name it with Request.ID", r.ID)
		}
	}
	rot, err := c.Rotation(ctx, id)
	if err != nil {
		return r, err
	}
	if !rot.Finished() {
		return r, badInput("rotation %s is %s and has not finished: pause or cancel it, wait for it to end, then roll back", id, rot.State)
	}
	if err := refuseRetired(rot); err != nil {
		return r, err
	}
	var ts []Target
	unknown := 0
	count := map[string]int{}
	err = c.store.Report(ctx, id, func(row tasks.ReportRow) error {
		if row.Outcome != tasks.OutcomeSucceeded {
			return nil
		}
		if row.OldKeypair == "" {
			unknown++
			return nil
		}
		ts = append(ts, Target{ServerID: row.ServerID, Keypair: row.OldKeypair, Region: row.Region, ProjectID: row.ProjectID})
		count[row.OldKeypair]++
		return nil
	})
	if err != nil {
		return r, wrap(err)
	}
	if unknown > 0 {
		return r, badInput("cannot roll back %s: %d of %d changed servers have no recorded old keypair (it was started with --skip-matching=false, or the API listed names that are not keypair names)",
			id, unknown, unknown+len(ts))
	}
	if len(ts) == 0 {
		return r, &InputError{Err: errors.New("rotation " + id + " changed no server: nothing to roll back")}
	}
	// The rollback's own keypair is the most common old one; every target
	// names its own anyway.
	kps := make([]string, 0, len(count))
	for k := range count {
		kps = append(kps, k)
	}
	sort.Slice(kps, func(i, j int) bool {
		return count[kps[i]] > count[kps[j]] || count[kps[i]] == count[kps[j]] && kps[i] < kps[j]
	})
	r.Keypair, r.Targets, r.Discover = kps[0], ts, nil
	return r, nil
}

// Rollback starts the rollback of rotation id: RollbackRequest, then
// Start.
func (c *Client) Rollback(ctx context.Context, id string, r Request) (*Started, error) {
	req, err := c.RollbackRequest(ctx, id, r)
	if err != nil {
		return nil, err
	}
	st, err := c.Start(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("roll back %s: %w", id, err)
	}
	return st, nil
}
