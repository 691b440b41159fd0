package tasks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
)

// minTick is the shortest pause between two ticks of a rotation: asynq
// moves scheduled tasks to their queue once a second anyway.
const minTick = time.Second

// callers is how many API calls one tick has in flight at once: enough to
// use a quota of tens of calls a second at real API latencies, few enough
// that one tick never holds many connections.
const callers = 4

// HandleTick runs one round of a rotation's driver: it polls the batches
// whose jobs are due (poll.go), reads back the keypairs of servers whose
// job succeeded (verify.go), gathers servers due for another attempt into
// full batches (retry.go), starts the next wave and finishes the rotation,
// then schedules the next tick for when something is due. A rotation has
// one chain of ticks at a time, started by the first checkpoint and ended
// when nothing is in flight; a tick of an older chain, or one whose
// successor has started, does nothing.
func (h *Handler) HandleTick(ctx context.Context, t *asynq.Task) error {
	var p TickPayload
	if err := decode(t.Payload(), &p, TypeTick); err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := h.log.With("rotation", p.Rotation, "tick", fmt.Sprintf("%d.%d", p.Gen, p.Seq))
	ok, err := h.store.ClaimTick(ctx, p.Rotation, p.Gen, p.Seq, h.now().Add(h.cfg.Tasks.Timeout))
	if err != nil || !ok {
		return err
	}
	rot, err := h.store.Rotation(ctx, p.Rotation)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("tick: %w: %w", err, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	r := &round{now: h.now()}
	r.at(r.now.Add(h.cfg.PollCap))
	if err := h.poll(ctx, log, rot, r); err != nil {
		return err
	}
	if err := h.verify(ctx, log, rot, r); err != nil {
		return err
	}
	if err := h.retry(ctx, log, rot, r); err != nil {
		return err
	}
	if _, err := h.followUps(ctx, rot.ID, r.finished); err != nil {
		return err
	}
	due := r.next
	if soonest := h.now().Add(minTick); due.Before(soonest) {
		due = soonest
	}
	if ok, err := h.store.NextTick(ctx, rot.ID, p.Gen, due); err != nil || !ok {
		return err
	}
	_, err = enqueueTick(ctx, h.enq, TickPayload{Rotation: p.Rotation, Gen: p.Gen, Seq: p.Seq + 1}, time.Until(due), h.cfg.Tasks)
	return err
}

// round is what one tick's stages found: when the next tick is due, and
// whether this one finished the rotation.
type round struct {
	now      time.Time
	mu       sync.Mutex
	next     time.Time
	finished bool
}

// at asks for the next tick no later than t (zero: no request).
func (r *round) at(t time.Time) {
	if t.IsZero() {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next.IsZero() || t.Before(r.next) {
		r.next = t
	}
}

// waited asks for the next tick when a call that had to wait may go.
func (r *round) waited(err error) {
	var d *ratelimit.DelayError
	if errors.As(err, &d) {
		r.at(r.now.Add(d.RetryIn))
		return
	}
	r.at(r.now.Add(minTick))
}

func (r *round) resolved(res Resolved) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished = r.finished || res.Finished
}

// each runs fn for every item, callers at a time, and starts no more once
// one returns stop or an error; it returns the first error.
func each[T any](ctx context.Context, items []T, fn func(ctx context.Context, item T) (stop bool, err error)) error {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		stopped bool
		first   error
		sem     = make(chan struct{}, callers)
	)
	for _, it := range items {
		sem <- struct{}{}
		mu.Lock()
		halt := stopped
		mu.Unlock()
		if halt {
			<-sem
			break
		}
		wg.Go(func() {
			defer func() { <-sem }()
			stop, err := fn(ctx, it)
			mu.Lock()
			defer mu.Unlock()
			stopped = stopped || stop || err != nil
			if first == nil {
				first = err
			}
		})
	}
	wg.Wait()
	return first
}

// followUps runs what follows recorded outcomes: the next wave's chunks
// when the current one has started and is not enqueued yet, and the
// finished rotation's retention and completion event. All are idempotent,
// so a task that crashed after recording can run them again. It reports
// whether the rotation has finished.
func (h *Handler) followUps(ctx context.Context, id string, finishedNow bool) (bool, error) {
	rot, err := h.store.Rotation(ctx, id)
	if err != nil {
		return false, err
	}
	if rot.State == StateRunning && rot.Wave > rot.waveQueued {
		n, err := enqueueWave(ctx, h.store, h.enq, rot, rot.Wave, h.cfg.Tasks)
		if err != nil {
			return false, err
		}
		h.log.InfoContext(ctx, "wave started", "rotation", id, "wave", rot.Wave, "waves", len(rot.Waves), "chunks", n,
			"failed", rot.Counts.Failed, "max_errors", rot.MaxErrors)
	}
	if !rot.Finished() {
		return false, nil
	}
	if finishedNow {
		h.log.InfoContext(ctx, "rotation finished", "rotation", id, "state", rot.State,
			"succeeded", rot.Counts.Succeeded, "failed", rot.Counts.Failed, "skipped", rot.Counts.Skipped,
			"cancelled", rot.Counts.Cancelled)
	}
	return true, finish(ctx, h.store, h.enq, rot, finishedNow, h.cfg.Tasks)
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
