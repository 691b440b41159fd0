package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// HandleSubmit submits one batch. It calls UpdateKeypair at most once per
// batch unless a previous call's outcome is unknown, and writes the
// answer's checkpoint before anything else; the rotation's tick polls it
// from then on.
func (h *Handler) HandleSubmit(ctx context.Context, t *asynq.Task) error {
	var p SubmitPayload
	if err := decode(t.Payload(), &p, TypeSubmit); err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := h.log.With("rotation", p.Rotation, "chunk", p.Batch)
	rot, err := h.store.Rotation(ctx, p.Rotation)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("submit batch %d: %w: %w", p.Batch, err, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	b, err := h.store.Batch(ctx, p.Rotation, p.Batch)
	if err != nil {
		return err
	}
	if b.Checkpointed {
		// Run again after a crash: what the first run may not have done
		// after its checkpoint is done now (all of it is idempotent).
		if b.RequestID == "" && b.Close[0] != "" && !b.Done {
			return h.recordClosed(ctx, log, p, b)
		}
		if err := h.startTick(ctx, log, rot, b.TickGen, -1); err != nil {
			return err
		}
		_, err := h.followUps(ctx, p.Rotation, false)
		return err
	}
	if len(b.Servers) == 0 {
		return fmt.Errorf("submit batch %d of %s: no servers planned: %w", p.Batch, p.Rotation, asynq.SkipRetry)
	}
	if err := h.notRunning(ctx, log, p, b, rot.State); err != nil || rot.State != StateRunning {
		return err
	}

	if err := h.limiterOf(rot).Wait(ctx, APIUpdateKeypair); err != nil {
		return err
	}
	// The limiter may have waited: the rotation's state is checked again,
	// atomically with marking the call, right before it.
	in, err := h.store.MarkIntent(ctx, p.Rotation, p.Batch)
	switch {
	case err != nil:
		return err
	case in.Checkpointed:
		return nil
	case !in.Go:
		return h.notRunning(ctx, log, p, b, in.State)
	case in.Earlier > 0:
		log.WarnContext(ctx, "an earlier submit of this batch ended without a checkpoint; submitting again", "earlier", in.Earlier)
	}
	req := make([]cph.ServerKeypair, len(b.Servers))
	for i, e := range b.Servers {
		req[i] = cph.ServerKeypair{ServerID: e.ServerID, KeypairName: e.Keypair}
	}
	var resp *cph.UpdateKeypairResponse
	err = h.call(ctx, rot, APIUpdateKeypair, func(ctx context.Context) (err error) {
		resp, err = h.apiOf(rot).UpdateKeypair(ctx, req)
		return err
	})
	if err != nil {
		return h.submitFailed(ctx, log, rot, p, b, err)
	}

	// The API has acted: the checkpoint comes first, on a context the
	// task's own cancellation cannot cut short, tried again while Redis
	// fails over until the task's deadline: a checkpoint given up leaves
	// an intent without one, and the task's next run submits again.
	jobs, errs := splitAnswer(b.Servers, resp)
	wctx, cancel := untilDeadline(ctx)
	now := h.now()
	_, first := h.firstPoll(rot)
	if len(jobs) == 0 {
		// Every server was refused: no job to wait for, and what the
		// refusals mean (a server deleted since, say) is read at once.
		first = 0
	}
	cp, err := persist(wctx, func(ctx context.Context) (Checkpointed, error) {
		return h.store.Checkpoint(ctx, p.Rotation, p.Batch, len(b.Servers), resp.RequestID, jobs, errs, now, now.Add(first))
	})
	cancel()
	if err != nil {
		return fmt.Errorf("submit batch %d: %w", p.Batch, err)
	}
	if !cp.First {
		// asynq ran this task twice at once (a lease expired while the
		// first run was alive): the other run's answer is the one polled.
		log.WarnContext(ctx, "another run of this batch checkpointed first; this call's jobs are not polled",
			"request_id", resp.RequestID)
		return nil
	}
	h.obs.Submitted(len(b.Servers))
	log.InfoContext(ctx, "batch submitted", "request_id", resp.RequestID, "jobs", len(jobs), "rejected", len(errs))
	if err := h.startTick(ctx, log, rot, cp.Tick, first); err != nil {
		return err
	}
	// The next chunk of the wave takes this one's place in the queue.
	_, err = h.followUps(ctx, p.Rotation, false)
	return err
}

// startTick enqueues the first tick of the chain a checkpoint started, in
// time for the batch's first poll, due in. A submit run again after a
// crash (in < 0) enqueues it only if that tick has not run yet, so a
// batch never starts a second chain.
func (h *Handler) startTick(ctx context.Context, log *slog.Logger, rot *Rotation, gen int, in time.Duration) error {
	if gen == 0 {
		return nil
	}
	if in < 0 {
		due, err := h.store.FirstTickDue(ctx, rot.ID, gen)
		if err != nil || !due {
			return err
		}
		_, in = h.firstPoll(rot)
	}
	ok, err := enqueueTick(ctx, h.enq, h.store.ns, TickPayload{Rotation: rot.ID, Gen: gen, Seq: 1}, in, h.cfg.Tasks)
	if ok {
		log.DebugContext(ctx, "tick chain started", "gen", gen)
	}
	return err
}

// notRunning handles a chunk attempt of a rotation that is not running:
// for a paused or halted (failed before finishing) rotation the task ends,
// costing nothing while the rotation waits, and resume enqueues it again
// (the watchdog too, should resume race the task's end); a cancelled one
// closes the attempt as cancelled.
func (h *Handler) notRunning(ctx context.Context, log *slog.Logger, p SubmitPayload, b *Batch, st State) error {
	switch st {
	case StateRunning:
		return nil
	case StatePaused, StateFailed:
		log.DebugContext(ctx, "rotation not running: submit task ends until resumed", "state", st)
		return nil
	case StateCancelled:
		return h.closeBatch(ctx, log, p, b, OutcomeCancelled, "", "rotation cancelled before this server was submitted")
	}
	return fmt.Errorf("submit batch %d of %s: rotation is %s: %w", p.Batch, p.Rotation, st, asynq.SkipRetry)
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
// batch.
func (h *Handler) submitFailed(ctx context.Context, log *slog.Logger, rot *Rotation, p SubmitPayload, b *Batch, err error) error {
	var ce *cph.Error
	// Only a 4xx answer proves the API did not act: a 5xx may come from the
	// gateway after CPH acted (504 backend timeout), and an undecodable 2xx
	// may have created jobs.
	answered := errors.As(err, &ce) && ce.StatusCode >= 400 && ce.StatusCode < 500
	if answered {
		// This call must not count as a possible duplicate.
		if cerr := h.store.ClearIntent(ctx, p.Rotation, p.Batch); cerr != nil {
			log.WarnContext(ctx, "clear submit intent", "err", cerr)
		}
	}
	if ctx.Err() == nil {
		// 401 or 403: the batch stays unsubmitted (its intent withdrawn
		// above) and the task ends, as for any halt: resume enqueues it
		// again.
		ok, herr := h.denied(ctx, log, rot, APIUpdateKeypair, err)
		if herr != nil || ok {
			return herr
		}
	}
	switch {
	case ctx.Err() != nil:
		return err // shutting down or timed out: asynq hands the task back
	case cph.IsThrottled(err):
		log.InfoContext(ctx, "UpdateKeypair throttled", "request_id", requestID(err))
		return h.throttled(ctx, rot, APIUpdateKeypair, err)
	case answered && !cph.IsTransient(err):
		msg := ce.Message
		if ce.StatusCode == 400 && len(b.Servers) > 1 {
			// CPH documents no batch limit; if it has one, this is where
			// it shows.
			msg += fmt.Sprintf(" (the whole batch of %d servers was rejected; if CPH limits the servers a call, start the rotation with a smaller --chunk-size)", len(b.Servers))
		}
		log.ErrorContext(ctx, "UpdateKeypair rejected the batch", "request_id", ce.RequestID, "code", ce.Code, "servers", len(b.Servers), "err", err)
		return h.closeBatch(ctx, log, p, b, OutcomeFailed, ce.Code, msg)
	case h.lastTry(ctx):
		log.ErrorContext(ctx, "UpdateKeypair kept failing; giving up on this batch", "err", err)
		return h.closeBatch(ctx, log, p, b, OutcomeFailed, CodeSubmitFailed, err.Error())
	}
	log.WarnContext(ctx, "UpdateKeypair failed; retrying", "request_id", requestID(err), "err", err)
	return fmt.Errorf("submit batch %d: %w", p.Batch, err)
}

// closeBatch ends a batch without jobs: every server gets the same
// terminal outcome. The outcome is stored with the checkpoint, so a run
// that dies before recording it leaves it for the task's next run.
func (h *Handler) closeBatch(ctx context.Context, log *slog.Logger, p SubmitPayload, b *Batch, o Outcome, code, msg string) error {
	wctx, cancel := detached(ctx)
	defer cancel()
	if b.Intents > 0 && o == OutcomeCancelled {
		// An earlier call may have acted before its worker died.
		msg = "rotation cancelled; an earlier submit of this server ended without an answer, so its keypair may have changed"
	}
	first, err := h.store.CloseBatch(wctx, p.Rotation, p.Batch, len(b.Servers), o, code, msg, h.now())
	if err != nil {
		return err
	}
	if !first {
		// Another run checkpointed the batch meanwhile: its answer (or
		// its closing) is the one recorded.
		if b, err = h.store.Batch(wctx, p.Rotation, p.Batch); err != nil || b.RequestID != "" || b.Done {
			return err
		}
		return h.recordClosed(wctx, log, p, b)
	}
	b.Close = [3]string{string(o), code, msg}
	return h.recordClosed(wctx, log, p, b)
}

// recordClosed records the outcome a closed batch stored for its servers
// not yet resolved, and runs the follow-ups.
func (h *Handler) recordClosed(ctx context.Context, log *slog.Logger, p SubmitPayload, b *Batch) error {
	rot, err := h.store.Rotation(ctx, p.Rotation)
	if err != nil {
		return err
	}
	o, code, msg := Outcome(b.Close[0]), b.Close[1], b.Close[2]
	var rs []Resolution
	for _, e := range b.Servers {
		if !b.Resolved[e.ServerID] {
			rs = append(rs, Resolution{ServerID: e.ServerID, Outcome: o, Code: code, Message: msg, Attempts: e.Attempt, Entry: e})
		}
	}
	res, err := h.store.Resolve(ctx, p.Rotation, p.Batch, rot.waveOfBatch(p.Batch), rs, time.Time{}, false, h.now())
	if err != nil {
		return err
	}
	h.obs.ServerOutcome(string(o), res.Recorded)
	log.InfoContext(ctx, "batch closed", "outcome", o, "servers", res.Recorded, "code", code)
	_, err = h.followUps(ctx, p.Rotation, res.Finished)
	return err
}

func requestID(err error) string {
	var ce *cph.Error
	if errors.As(err, &ce) {
		return ce.RequestID
	}
	return ""
}
