package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// pauseRecheck is how often a paused or halted rotation's submit tasks
// look again: resume takes effect within it.
const pauseRecheck = 5 * time.Second

// HandleSubmit submits one chunk attempt. It calls UpdateKeypair at most
// once per chunk attempt unless a previous call's outcome is unknown, and
// writes the answer's checkpoint before anything else.
func (h *Handler) HandleSubmit(ctx context.Context, t *asynq.Task) error {
	var p SubmitPayload
	if err := decode(t.Payload(), &p, TypeSubmit); err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := h.log.With("rotation", p.Rotation, "chunk", p.Chunk, "attempt", p.Attempt)
	rot, err := h.store.Rotation(ctx, p.Rotation)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("submit chunk %d: %w: %w", p.Chunk, err, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	a, err := h.store.Attempt(ctx, p.Rotation, p.Chunk, p.Attempt)
	if err != nil {
		return err
	}
	if a.Checkpointed {
		log.InfoContext(ctx, "chunk attempt already submitted; polling", "request_id", a.RequestID)
		return h.schedulePoll(ctx, p, 1)
	}
	if len(a.Servers) == 0 {
		return fmt.Errorf("submit chunk %d attempt %d of %s: no servers planned: %w", p.Chunk, p.Attempt, p.Rotation, asynq.SkipRetry)
	}
	if err := h.notRunning(ctx, log, p, a, rot.State); err != nil || rot.State != StateRunning {
		return err
	}

	if err := h.limiter.Wait(ctx, APIUpdateKeypair); err != nil {
		return err
	}
	// The limiter may have waited: the rotation's state is checked again,
	// atomically with marking the call, right before it.
	in, err := h.store.MarkIntent(ctx, p.Rotation, p.Chunk, p.Attempt)
	switch {
	case err != nil:
		return err
	case in.Checkpointed:
		return h.schedulePoll(ctx, p, 1)
	case !in.Go:
		return h.notRunning(ctx, log, p, a, in.State)
	case in.Earlier > 0:
		log.WarnContext(ctx, "an earlier submit of this chunk attempt ended without a checkpoint; submitting again", "earlier", in.Earlier)
	}
	req := make([]cph.ServerKeypair, len(a.Servers))
	for i, e := range a.Servers {
		req[i] = cph.ServerKeypair{ServerID: e.ServerID, KeypairName: e.Keypair}
	}
	var resp *cph.UpdateKeypairResponse
	err = h.call(ctx, APIUpdateKeypair, func(ctx context.Context) (err error) {
		resp, err = h.api.UpdateKeypair(ctx, req)
		return err
	})
	if err != nil {
		return h.submitFailed(ctx, log, p, a, err)
	}

	// The API has acted: the checkpoint comes first, on a context the
	// task's own cancellation cannot cut short.
	jobs, errs := splitAnswer(a.Servers, resp)
	wctx, cancel := detached(ctx)
	first, err := h.store.Checkpoint(wctx, p.Rotation, p.Chunk, p.Attempt, len(a.Servers), resp.RequestID, jobs, errs, h.now())
	cancel()
	if err != nil {
		return fmt.Errorf("submit chunk %d attempt %d: %w", p.Chunk, p.Attempt, err)
	}
	if !first {
		// asynq ran this task twice at once (a lease expired while the
		// first run was alive): the other run's answer is the one polled.
		log.WarnContext(ctx, "another run of this chunk attempt checkpointed first; this call's jobs are not polled",
			"request_id", resp.RequestID)
		return nil
	}
	h.obs.Submitted(len(a.Servers))
	log.InfoContext(ctx, "chunk submitted", "request_id", resp.RequestID, "jobs", len(jobs), "rejected", len(errs))
	return h.schedulePoll(ctx, p, 1)
}

// notRunning handles a chunk attempt of a rotation that is not running:
// paused and halted (failed before finishing) rotations put the task back
// until resumed; a cancelled one closes the attempt as cancelled.
func (h *Handler) notRunning(ctx context.Context, log *slog.Logger, p SubmitPayload, a *Attempt, st State) error {
	switch st {
	case StateRunning:
		return nil
	case StatePaused:
		return delayed(pauseRecheck, fmt.Errorf("rotation %s is paused", p.Rotation))
	case StateCancelled:
		return h.closeAttempt(ctx, log, p, a, OutcomeCancelled, "", "rotation cancelled before this chunk was submitted")
	case StateFailed:
		return delayed(pauseRecheck, fmt.Errorf("rotation %s is halted by its error budget", p.Rotation))
	}
	return fmt.Errorf("submit chunk %d attempt %d of %s: rotation is %s: %w", p.Chunk, p.Attempt, p.Rotation, st, asynq.SkipRetry)
}

// splitAnswer sorts an UpdateKeypair answer into job ids and per-server
// errors. A server the answer does not mention gets an error of its own,
// so no server is lost.
func splitAnswer(servers []Entry, resp *cph.UpdateKeypairResponse) (jobs map[string]string, errs map[string][2]string) {
	jobs, errs = map[string]string{}, map[string][2]string{}
	for _, j := range resp.Jobs {
		if j.Failed() {
			code := j.ErrorCode
			if code == "" {
				code = CodeMissingJob
			}
			errs[j.ServerID] = [2]string{code, j.ErrorMsg}
			continue
		}
		jobs[j.ServerID] = j.JobID
	}
	for _, e := range servers {
		_, ok1 := jobs[e.ServerID]
		_, ok2 := errs[e.ServerID]
		if !ok1 && !ok2 {
			errs[e.ServerID] = [2]string{CodeMissingJob, "the UpdateKeypair answer had no entry for this server"}
		}
	}
	return jobs, errs
}

// submitFailed decides what a failed UpdateKeypair call means for the
// chunk attempt.
func (h *Handler) submitFailed(ctx context.Context, log *slog.Logger, p SubmitPayload, a *Attempt, err error) error {
	var ce *cph.Error
	// Only a 4xx answer proves the API did not act: a 5xx may come from the
	// gateway after CPH acted (504 backend timeout), and an undecodable 2xx
	// may have created jobs.
	answered := errors.As(err, &ce) && ce.StatusCode >= 400 && ce.StatusCode < 500
	if answered {
		// This call must not count as a possible duplicate.
		if cerr := h.store.ClearIntent(ctx, p.Rotation, p.Chunk, p.Attempt); cerr != nil {
			log.WarnContext(ctx, "clear submit intent", "err", cerr)
		}
	}
	switch {
	case ctx.Err() != nil:
		return err // shutting down or timed out: asynq hands the task back
	case cph.IsThrottled(err):
		log.InfoContext(ctx, "UpdateKeypair throttled", "request_id", requestID(err))
		return h.throttled(ctx, APIUpdateKeypair, err)
	case answered && !cph.IsTransient(err):
		log.ErrorContext(ctx, "UpdateKeypair rejected the chunk", "request_id", ce.RequestID, "code", ce.Code, "err", err)
		return h.closeAttempt(ctx, log, p, a, OutcomeFailed, ce.Code, ce.Message)
	case h.lastTry(ctx):
		log.ErrorContext(ctx, "UpdateKeypair kept failing; giving up on this chunk attempt", "err", err)
		return h.closeAttempt(ctx, log, p, a, OutcomeFailed, CodeSubmitFailed, err.Error())
	}
	log.WarnContext(ctx, "UpdateKeypair failed; retrying", "request_id", requestID(err), "err", err)
	return fmt.Errorf("submit chunk %d attempt %d: %w", p.Chunk, p.Attempt, err)
}

// closeAttempt ends a chunk attempt without jobs: every server gets the
// same terminal outcome.
func (h *Handler) closeAttempt(ctx context.Context, log *slog.Logger, p SubmitPayload, a *Attempt, o Outcome, code, msg string) error {
	wctx, cancel := detached(ctx)
	defer cancel()
	if _, err := h.store.Checkpoint(wctx, p.Rotation, p.Chunk, p.Attempt, len(a.Servers), "", nil, nil, h.now()); err != nil {
		return err
	}
	rs := make([]Resolution, len(a.Servers))
	for i, e := range a.Servers {
		rs[i] = Resolution{ServerID: e.ServerID, Outcome: o, Code: code, Message: msg, Attempts: p.Attempt}
	}
	res, err := h.store.Resolve(wctx, p.Rotation, p.Chunk, p.Attempt, rs, h.now())
	if err != nil {
		return err
	}
	h.obs.ServerOutcome(string(o), res.Recorded)
	log.InfoContext(ctx, "chunk attempt closed", "outcome", o, "servers", res.Recorded, "code", code)
	return h.afterComplete(ctx, p.Rotation, p.Chunk, p.Attempt, res)
}

func (h *Handler) schedulePoll(ctx context.Context, p SubmitPayload, round int) error {
	_, err := enqueuePoll(ctx, h.enq, PollPayload{Rotation: p.Rotation, Chunk: p.Chunk, Attempt: p.Attempt, Round: round},
		h.pollDelay(round), h.cfg.Tasks)
	return err
}

// pollDelay grows by half each round from FirstPoll to PollCap, with ±20 %
// jitter so chunks submitted together do not poll together for ever.
func (h *Handler) pollDelay(round int) time.Duration {
	d := h.cfg.FirstPoll
	for i := 1; i < round && d < h.cfg.PollCap; i++ {
		d = d * 3 / 2
	}
	d = min(d, h.cfg.PollCap)
	return d*4/5 + rand.N(d*2/5+1)
}

func requestID(err error) string {
	var ce *cph.Error
	if errors.As(err, &ce) {
		return ce.RequestID
	}
	return ""
}
