package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/cph-rekey/cph-rekey/rekey"
)

func cmdPause(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "pause", "ROTATION",
		"Pauses a rotation: no new chunk is submitted (workers check right before each UpdateKeypair call);\nchunks already submitted are polled to the end.")
	ctx, id, c, closeFn, err := rotationCommand(ctx, f, args)
	if err != nil {
		return err
	}
	defer closeFn()
	if err := c.Pause(ctx, id); err != nil {
		return usage(err)
	}
	fmt.Fprintf(e.stdout, "%s paused\n", id)
	return nil
}

func cmdResume(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "resume", "ROTATION",
		"Resumes a rotation paused by an operator or after a wave, halted by its error budget (after\nan operator's decision: raise the budget with --max-errors, or a rotation across regions'\nwith --max-errors-total), or halted because the CPH API refused its credentials (401/403: once\nthe IAM policy or credentials are fixed). Starts the next wave if the current one has finished.")
	maxErrors := f.String("max-errors", "", "new error `budget`: servers (5) or % of the servers the rotation submits (10%); of a rotation\nacross (region, project) parts, each part's")
	maxErrorsTotal := f.String("max-errors-total", "", "new error `budget` of a rotation across (region, project) parts as a whole: servers (20) or %\nof the servers its parts submit")
	ctx, id, c, closeFn, err := rotationCommand(ctx, f, args)
	if err != nil {
		return err
	}
	defer closeFn()
	var opts rekey.ResumeOptions
	if *maxErrors != "" {
		b, err := rekey.ParseSize(*maxErrors)
		if err != nil {
			return usagef("--max-errors: %v", err)
		}
		opts.MaxErrors = &b
	}
	if *maxErrorsTotal != "" {
		b, err := rekey.ParseSize(*maxErrorsTotal)
		if err != nil {
			return usagef("--max-errors-total: %v", err)
		}
		opts.MaxErrorsTotal = &b
	}
	res, err := c.Resume(ctx, id, opts)
	if err != nil {
		return usage(err)
	}
	fmt.Fprintln(e.stdout, resumedLine(id, res))
	return nil
}

// resumedLine says what a resume did. A rotation across places has a
// budget a part (their sum is nobody's) and maybe one of the whole.
func resumedLine(id string, res *rekey.Resumed) string {
	rot := res.Rotation
	if len(rot.Parts) == 0 {
		return fmt.Sprintf("%s running: wave %d/%d, max errors %d, %d chunks enqueued", id, rot.Wave, rot.Waves, rot.MaxErrors, res.Enqueued)
	}
	budgets := make([]string, len(rot.Parts))
	for i, p := range rot.Parts {
		budgets[i] = fmt.Sprintf("%s %d", p.ID, p.MaxErrors)
	}
	total := "none"
	if rot.MaxErrorsTotal >= 0 {
		total = fmt.Sprint(rot.MaxErrorsTotal)
	}
	return fmt.Sprintf("%s running: max errors by part %s, rotation-wide %s, %d chunks enqueued",
		id, strings.Join(budgets, ", "), total, res.Enqueued)
}

func cmdCancel(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "cancel", "ROTATION",
		"Cancels a rotation: every server not yet submitted (retries waiting for their backoff included)\nis recorded as cancelled at once; in-flight API calls end and their jobs are recorded.")
	ctx, id, c, closeFn, err := rotationCommand(ctx, f, args)
	if err != nil {
		return err
	}
	defer closeFn()
	res, err := c.Cancel(ctx, id)
	if err != nil {
		return usage(err)
	}
	fmt.Fprintf(e.stdout, "%s cancelled: %d servers recorded cancelled, %d still running (their jobs are recorded as they end)\n",
		id, res.Closed, res.Rotation.Counts.Running)
	return nil
}

func cmdDiscard(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "discard", "ROTATION",
		"Discards what a start cut short before the rotation was created left behind: its frozen plan\n"+
			"and chunks (nothing of it was enqueued or submitted). Run it when starting again is refused\n"+
			"because the fleet has changed since the interrupted start froze its plan; then start again.\n"+
			"A rotation that was created is never discarded: cancel it instead.")
	if err := f.parse(args, 1); err != nil {
		return err
	}
	id, err := f.rotationArg()
	if err != nil {
		return err
	}
	rdb, c, err := f.connect(rekey.Options{})
	if err != nil {
		return err
	}
	defer func() { c.Close(); rdb.Close() }()
	d, err := c.Discard(ctx, id)
	if err != nil {
		return usage(err)
	}
	fmt.Fprintf(e.stdout, "%s discarded: the interrupted start's plan of %d chunks (%d servers, %d skipped); nothing had been submitted\n",
		id, d.Chunks, d.Servers, d.Skipped)
	return nil
}

// rotationCommand parses a control that takes one rotation id, with its
// --actor, and connects to Redis; closeFn closes the connection. The
// context returned carries the actor.
func rotationCommand(ctx context.Context, f *flags, args []string) (_ context.Context, id string, c *rekey.Client, closeFn func(), err error) {
	f.addActor()
	if err := f.parse(args, 1); err != nil {
		return ctx, "", nil, nil, err
	}
	if id, err = f.rotationArg(); err != nil {
		return ctx, "", nil, nil, err
	}
	if ctx, err = f.withActor(ctx); err != nil {
		return ctx, "", nil, nil, err
	}
	rdb, c, err := f.connect(rekey.Options{})
	if err != nil {
		return ctx, "", nil, nil, err
	}
	return ctx, id, c, func() { c.Close(); rdb.Close() }, nil
}

func cmdRollback(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "rollback", "ROTATION",
		"Starts a new rotation that puts every server ROTATION changed (outcome succeeded) back on the\n"+
			"keypair it had before, taken from ROTATION's report. Prints the new rotation's id.")
	p := addPlanFlags(f, "default ROTATION-rollback")
	if err := f.parse(args, 1); err != nil {
		return err
	}
	ctx, err := f.withActor(ctx)
	if err != nil {
		return err
	}
	src, err := f.rotationArg()
	if err != nil {
		return err
	}
	if p.rotationID == "" {
		p.rotationID = src + "-rollback"
		if err := rekey.ValidateRotationID(p.rotationID); err != nil {
			return usagef("rollback id %q is too long: name it with --rotation-id", p.rotationID)
		}
	}
	// The source rotation is read first: a rollback of a rotation that
	// does not exist, or cannot be rolled back, needs no CPH endpoint.
	rdb, c, err := f.connect(rekey.Options{})
	if err != nil {
		return err
	}
	defer rdb.Close()
	req, err := c.RollbackRequest(ctx, src, rekey.Request{ID: p.rotationID})
	if err != nil {
		return usage(err)
	}
	r, err := p.request(req.Keypair)
	if err != nil {
		return err
	}
	r.Targets = req.Targets
	return p.run(ctx, e, f, r, false)
}
