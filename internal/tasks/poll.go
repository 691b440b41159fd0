package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// HandlePoll lists a submitted chunk attempt's jobs, records every server
// whose job has ended, and schedules the next round while jobs still run.
// Outcomes are recorded exactly once however many polls race.
func (h *Handler) HandlePoll(ctx context.Context, t *asynq.Task) error {
	var p PollPayload
	if err := decode(t.Payload(), &p, TypePoll); err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := h.log.With("rotation", p.Rotation, "chunk", p.Chunk, "attempt", p.Attempt, "round", p.Round)
	rot, err := h.store.Rotation(ctx, p.Rotation)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("poll chunk %d: %w: %w", p.Chunk, err, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	a, err := h.store.Attempt(ctx, p.Rotation, p.Chunk, p.Attempt)
	if err != nil {
		return err
	}
	if a.Done {
		return h.afterComplete(ctx, p.Rotation, p.Chunk, p.Attempt, Resolved{})
	}
	if !a.Checkpointed {
		return fmt.Errorf("poll chunk %d attempt %d of %s: not submitted: %w", p.Chunk, p.Attempt, p.Rotation, asynq.SkipRetry)
	}
	log = log.With("request_id", a.RequestID)

	var rs []Resolution
	open := 0
	for _, e := range a.Servers {
		if a.Resolved[e.ServerID] {
			continue
		}
		if ee, ok := a.Errors[e.ServerID]; ok {
			rs = append(rs, h.failure(rot, p.Attempt, e, "", ee[0], ee[1]))
			continue
		}
		open++
	}
	var verr error
	if open > 0 {
		jobs, err := h.listJobs(ctx, log, a.RequestID, len(a.Jobs))
		switch {
		case err != nil && h.lastTry(ctx) && !isDelay(err):
			log.ErrorContext(ctx, "ListJobs kept failing; giving up on the open jobs", "err", err)
			rs = append(rs, h.resolveOpen(rot, p.Attempt, a, nil, CodePollFailed, err.Error())...)
		case err != nil:
			return err
		default:
			h.obs.PollRound(APIListJobs)
			ended := h.resolveOpen(rot, p.Attempt, a, jobs, "", "")
			if rot.Verify {
				ended, verr = h.verify(ctx, log, a, ended)
			}
			rs = append(rs, ended...)
		}
	}
	wctx, cancel := detached(ctx)
	defer cancel()
	res, err := h.store.Resolve(wctx, p.Rotation, p.Chunk, p.Attempt, rs, h.now())
	if err != nil {
		return err
	}
	h.countOutcomes(rs, res)
	if verr != nil {
		// What was verified is recorded; the rest is read again on the
		// task's next run.
		return verr
	}
	if res.Complete || len(rs) == len(a.Servers)-len(a.Resolved) {
		log.InfoContext(ctx, "chunk attempt complete", "retries", res.Retries)
		return h.afterComplete(ctx, p.Rotation, p.Chunk, p.Attempt, res)
	}
	_, err = enqueuePoll(ctx, h.enq, PollPayload{Rotation: p.Rotation, Chunk: p.Chunk, Attempt: p.Attempt, Round: p.Round + 1},
		h.pollDelay(p.Round+1), h.cfg.Tasks)
	return err
}

func (h *Handler) listJobs(ctx context.Context, log *slog.Logger, requestID string, expected int) ([]cph.Job, error) {
	if err := h.limiter.Wait(ctx, APIListJobs); err != nil {
		return nil, err
	}
	var jobs []cph.Job
	err := h.call(ctx, APIListJobs, func(ctx context.Context) (err error) {
		jobs, err = h.api.ListJobsOf(ctx, requestID, expected)
		return err
	})
	switch {
	case err == nil:
		return jobs, nil
	case ctx.Err() != nil:
		return nil, err
	case cph.IsThrottled(err):
		return nil, h.throttled(ctx, APIListJobs, err)
	}
	log.WarnContext(ctx, "ListJobs failed", "err", err)
	return nil, fmt.Errorf("list jobs of %s: %w", requestID, err)
}

// resolveOpen turns the listed jobs into resolutions for the attempt's open
// servers. With failCode set (jobs nil) every open server fails with it.
func (h *Handler) resolveOpen(rot *Rotation, attempt int, a *Attempt, jobs []cph.Job, failCode, failMsg string) []Resolution {
	byID := make(map[string]cph.Job, len(jobs))
	for _, j := range jobs {
		byID[j.JobID] = j
	}
	timedOut := h.now().Sub(a.SubmittedAt) > h.cfg.JobTimeout
	var rs []Resolution
	for _, e := range a.Servers {
		jobID, ok := a.Jobs[e.ServerID]
		if !ok || a.Resolved[e.ServerID] {
			continue
		}
		if failCode != "" {
			rs = append(rs, h.failure(rot, attempt, e, jobID, failCode, failMsg))
			continue
		}
		j, listed := byID[jobID]
		switch {
		case listed && j.Status == cph.JobSucceeded:
			rs = append(rs, Resolution{ServerID: e.ServerID, Outcome: OutcomeSucceeded, JobID: jobID, Attempts: attempt})
		case listed && j.Status == cph.JobFailed:
			rs = append(rs, h.failure(rot, attempt, e, jobID, j.ErrorCode, j.ErrorMsg))
		case timedOut:
			rs = append(rs, h.failure(rot, attempt, e, jobID, CodeJobTimeout,
				fmt.Sprintf("job still running %s after submission", h.cfg.JobTimeout)))
		}
	}
	return rs
}

// verify reads back the keypair of every server whose job succeeded (see
// docs/controls.md for why one ShowServer per server, paced by the read
// limiter, is the batch). A server on another keypair failed with
// CodeVerifyMismatch, permanently: the job claimed a change that did not
// happen, and submitting again would only repeat the claim. When a read
// must wait (rate limit, 429, transient error) verify returns the servers
// resolved so far with the error; the others stay open for the next run.
func (h *Handler) verify(ctx context.Context, log *slog.Logger, a *Attempt, rs []Resolution) ([]Resolution, error) {
	want := make(map[string]string, len(a.Servers))
	for _, e := range a.Servers {
		want[e.ServerID] = e.Keypair
	}
	for i := range rs {
		r := &rs[i]
		if r.Retry != nil || r.Outcome != OutcomeSucceeded {
			continue
		}
		srv, err := h.showServer(ctx, r.ServerID)
		switch {
		case err != nil && !isDelay(err) && ctx.Err() == nil && (cph.KindOf(err) == cph.KindPermanent || h.lastTry(ctx)):
			*r = Resolution{ServerID: r.ServerID, Outcome: OutcomeFailed, JobID: r.JobID, Attempts: r.Attempts,
				Code: CodeVerifyFailed, Message: "read-back after the job succeeded: " + err.Error()}
		case err != nil:
			log.WarnContext(ctx, "verification read must wait", "server", r.ServerID, "err", err)
			return unverified(rs, i), err
		case srv.KeypairName != want[r.ServerID]:
			log.ErrorContext(ctx, "job succeeded but the keypair did not change", "server", r.ServerID, "job_id", r.JobID,
				"keypair_name", srv.KeypairName, "want", want[r.ServerID])
			*r = Resolution{ServerID: r.ServerID, Outcome: OutcomeFailed, JobID: r.JobID, Attempts: r.Attempts,
				Code: CodeVerifyMismatch, Message: fmt.Sprintf("job succeeded but keypair_name is %q, not %q", srv.KeypairName, want[r.ServerID])}
		}
	}
	return rs, nil
}

// unverified drops from rs the succeeded servers from index i on, which
// were not read back yet.
func unverified(rs []Resolution, i int) []Resolution {
	out := rs[:i:i]
	for _, r := range rs[i:] {
		if r.Retry != nil || r.Outcome != OutcomeSucceeded {
			out = append(out, r)
		}
	}
	return out
}

func (h *Handler) showServer(ctx context.Context, id string) (*cph.Server, error) {
	if err := h.limiter.Wait(ctx, APIShowServer); err != nil {
		return nil, err
	}
	var srv *cph.Server
	err := h.call(ctx, APIShowServer, func(ctx context.Context) (err error) {
		srv, err = h.api.ShowServer(ctx, id)
		return err
	})
	switch {
	case err == nil:
		return srv, nil
	case ctx.Err() != nil:
		return nil, err
	case cph.IsThrottled(err):
		return nil, h.throttled(ctx, APIShowServer, err)
	}
	return nil, fmt.Errorf("read back server %s: %w", id, err)
}

// failure resolves a server whose job (or submission) failed: retried in
// the next attempt when the cause is transient and attempts remain,
// recorded as failed otherwise. A cancelled rotation retries nothing.
func (h *Handler) failure(rot *Rotation, attempt int, e Entry, jobID, code, msg string) Resolution {
	r := Resolution{ServerID: e.ServerID, Outcome: OutcomeFailed, JobID: jobID, Code: code, Message: msg, Attempts: attempt}
	if code == "" {
		r.Code = "UNKNOWN"
	}
	switch {
	case rot.State == StateCancelled:
		r.Outcome = OutcomeCancelled
	case cph.ClassifyCode(code) != cph.KindPermanent && attempt < rot.MaxAttempts:
		retry := e
		r.Retry = &retry
	}
	return r
}

func (h *Handler) countOutcomes(rs []Resolution, res Resolved) {
	if res.Recorded == 0 {
		return
	}
	n := map[string]int{}
	for _, r := range rs {
		if r.Retry != nil {
			n["retried"]++
		} else {
			n[string(r.Outcome)]++
		}
	}
	for o, c := range n {
		h.obs.ServerOutcome(o, c)
	}
}

// afterComplete runs the follow-ups of a complete chunk attempt: the next
// attempt for its retried servers, the next wave's chunks when this
// attempt finished its wave, and the completion event when the rotation
// has finished. All are idempotent, so a task that crashed after
// completing the attempt can run them again.
func (h *Handler) afterComplete(ctx context.Context, rotation string, chunk, attempt int, res Resolved) error {
	next, err := h.store.Attempt(ctx, rotation, chunk, attempt+1)
	if err != nil {
		return err
	}
	if len(next.Servers) > 0 && !next.Checkpointed {
		delay := h.cfg.RetryBase + fullJitter(h.cfg.RetryBase, h.cfg.RetryCap, attempt-1)
		p := SubmitPayload{Rotation: rotation, Chunk: chunk, Attempt: attempt + 1, Servers: len(next.Servers)}
		if _, err := enqueueSubmit(ctx, h.enq, p, delay, h.cfg.Tasks); err != nil {
			return err
		}
	}
	rot, err := h.store.Rotation(ctx, rotation)
	if err != nil {
		return err
	}
	if res.Advanced > 0 {
		h.log.InfoContext(ctx, "wave finished within the error budget", "rotation", rotation, "next_wave", res.Advanced,
			"waves", len(rot.Waves), "state", rot.State, "failed", rot.Counts.Failed, "max_errors", rot.MaxErrors)
	}
	if rot.State == StateRunning && rot.WaveOf(chunk) < rot.Wave {
		n, err := enqueueWave(ctx, h.store, h.enq, rot, rot.Wave, h.cfg.Tasks)
		if err != nil {
			return err
		}
		if n > 0 {
			h.log.InfoContext(ctx, "wave started", "rotation", rotation, "wave", rot.Wave, "chunks", n)
		}
	}
	if !rot.Finished() {
		return nil
	}
	if res.Finished {
		h.log.InfoContext(ctx, "rotation finished", "rotation", rotation, "state", rot.State,
			"succeeded", rot.Counts.Succeeded, "failed", rot.Counts.Failed, "skipped", rot.Counts.Skipped,
			"cancelled", rot.Counts.Cancelled)
	}
	return finish(ctx, h.store, h.enq, rot, res.Finished, h.cfg.Tasks)
}

// finish runs a finished rotation's follow-ups: the retention of its
// records (set by whoever finished it) and its completion event.
func finish(ctx context.Context, store *Store, enq Enqueuer, rot *Rotation, finishedNow bool, opts TaskOptions) error {
	opts = opts.withDefaults()
	// Not only when finishedNow: the task that finished the rotation may
	// have died before setting the retention, and its re-run must set it.
	if err := store.Expire(ctx, rot, opts.Retention); err != nil {
		return err
	}
	return enqueueFinished(ctx, enq, rot, opts)
}

// enqueueFinished enqueues the rotation's completion event once: its task
// ID is kept (Retention) for as long as the rotation's records, so a second
// finisher's enqueue is refused as a duplicate.
func enqueueFinished(ctx context.Context, enq Enqueuer, rot *Rotation, opts TaskOptions) error {
	opts = opts.withDefaults()
	ret := opts.Retention
	if rot.Retention > 0 {
		ret = rot.Retention
	}
	s := Summary{Rotation: rot.ID, State: rot.State, Reason: rot.Reason, Keypair: rot.Keypair, Counts: rot.Counts,
		CreatedAt: rot.CreatedAt, FinishedAt: rot.FinishedAt}
	_, err := enqueue(ctx, enq, TypeFinished, s, FinishedTaskID(rot.ID), asynq.Queue(QueueEvents), asynq.Retention(ret))
	return err
}

func isDelay(err error) bool { return !IsFailure(err) }
