package main

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

func cmdPause(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "pause", "ROTATION",
		"Pauses a rotation: no new chunk is submitted (workers check right before each UpdateKeypair call);\nchunks already submitted are polled to the end.")
	id, rdb, store, err := rotationCommand(f, args)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := store.SetState(ctx, id, tasks.StatePaused, "paused by an operator"); err != nil {
		return notFound(err)
	}
	fmt.Fprintf(e.stdout, "%s paused\n", id)
	return nil
}

func cmdResume(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "resume", "ROTATION",
		"Resumes a rotation paused by an operator or after a wave, or halted by its error budget (after\nan operator's decision: raise the budget with --max-errors). Starts the next wave if the current\none has finished.")
	maxErrors := f.String("max-errors", "", "new error `budget`: servers (5) or % of the servers the rotation submits (10%)")
	id, rdb, store, err := rotationCommand(f, args)
	if err != nil {
		return err
	}
	defer rdb.Close()
	var budget *tasks.Size
	if *maxErrors != "" {
		b, err := tasks.ParseSize(*maxErrors)
		if err != nil {
			return usagef("--max-errors: %v", err)
		}
		budget = &b
	}
	enq := asynq.NewClientFromRedisClient(rdb)
	defer enq.Close()
	rot, n, err := tasks.Resume(ctx, store, enq, id, budget, tasks.TaskOptions{})
	if err != nil {
		return notFound(err)
	}
	fmt.Fprintf(e.stdout, "%s running: wave %d/%d, max errors %d, %d chunks enqueued\n", id, rot.Wave, len(rot.Waves), rot.MaxErrors, n)
	return nil
}

func cmdCancel(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "cancel", "ROTATION",
		"Cancels a rotation: every server not yet submitted (retries waiting for their backoff included)\nis recorded as cancelled at once; in-flight API calls end and their jobs are recorded.")
	id, rdb, store, err := rotationCommand(f, args)
	if err != nil {
		return err
	}
	defer rdb.Close()
	enq := asynq.NewClientFromRedisClient(rdb)
	defer enq.Close()
	rot, closed, err := tasks.Cancel(ctx, store, enq, id, tasks.TaskOptions{}, time.Now())
	if err != nil {
		return notFound(err)
	}
	fmt.Fprintf(e.stdout, "%s cancelled: %d servers recorded cancelled, %d still running (their jobs are recorded as they end)\n",
		id, closed, rot.Counts.Running)
	return nil
}

// rotationCommand parses a command that takes one rotation id and
// connects to Redis.
func rotationCommand(f *flags, args []string) (string, redis.UniversalClient, *tasks.Store, error) {
	if err := f.parse(args, 1); err != nil {
		return "", nil, nil, err
	}
	id, err := f.rotationArg()
	if err != nil {
		return "", nil, nil, err
	}
	rdb, store, _, err := f.connect()
	if err != nil {
		return "", nil, nil, err
	}
	return id, rdb, store, nil
}

func cmdRollback(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "rollback", "ROTATION",
		"Starts a new rotation that puts every server ROTATION changed (outcome succeeded) back on the\n"+
			"keypair it had before, taken from ROTATION's report. Prints the new rotation's id.")
	p := addPlanFlags(f, "default ROTATION-rollback")
	if err := f.parse(args, 1); err != nil {
		return err
	}
	src, err := f.rotationArg()
	if err != nil {
		return err
	}
	if p.rotationID == "" {
		p.rotationID = src + "-rollback"
		if err := tasks.ValidateRotationID(p.rotationID); err != nil {
			return usagef("rollback id %q is too long: name it with --rotation-id", p.rotationID)
		}
	}
	rdb, store, _, err := f.connect()
	if err != nil {
		return err
	}
	defer rdb.Close()
	targets, keypair, err := rollbackTargets(ctx, store, src)
	if err != nil {
		return err
	}
	spec, err := p.spec(keypair)
	if err != nil {
		return err
	}
	spec.Targets = targets
	client, err := p.client(e, false)
	if err != nil {
		return err
	}
	return p.run(ctx, e, f, spec, client)
}

// rollbackTargets reads the servers rotation src changed and the keypair
// each had before. It refuses when a changed server's old keypair is
// unknown (src was started with --skip-matching=false), and returns the
// most common old keypair as the rollback's own.
func rollbackTargets(ctx context.Context, store *tasks.Store, src string) ([]tasks.Target, string, error) {
	rot, err := store.Rotation(ctx, src)
	if err != nil {
		return nil, "", notFound(err)
	}
	if !rot.Finished() {
		return nil, "", usagef("rotation %s is %s and has not finished: pause or cancel it, wait for it to end, then roll back", src, rot.State)
	}
	var ts []tasks.Target
	unknown := 0
	count := map[string]int{}
	err = store.Report(ctx, src, func(r tasks.ReportRow) error {
		if r.Outcome != tasks.OutcomeSucceeded {
			return nil
		}
		if r.OldKeypair == "" {
			unknown++
			return nil
		}
		ts = append(ts, tasks.Target{ServerID: r.ServerID, Keypair: r.OldKeypair})
		count[r.OldKeypair]++
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	if unknown > 0 {
		return nil, "", usagef("cannot roll back %s: %d of %d changed servers have no recorded old keypair (it was started with --skip-matching=false)",
			src, unknown, unknown+len(ts))
	}
	if len(ts) == 0 {
		return nil, "", usageError{errors.New("rotation " + src + " changed no server: nothing to roll back")}
	}
	kps := make([]string, 0, len(count))
	for k := range count {
		kps = append(kps, k)
	}
	sort.Slice(kps, func(i, j int) bool {
		return count[kps[i]] > count[kps[j]] || count[kps[i]] == count[kps[j]] && kps[i] < kps[j]
	})
	return ts, kps[0], nil
}
