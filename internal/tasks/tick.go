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

// minTick is the shortest pause between two ticks of a rotation whose
// stages ran out of work: nothing is due sooner, and a chain that wakes
// for nothing costs Redis reads.
const minTick = time.Second

// tickBudget bounds how long one tick keeps working while work comes due
// within loopGap; then it hands its worker slot back and the next tick
// goes on. Each handover costs its calls in flight and asynq's pick-up
// (up to a second before DelayedTaskCheckInterval and TaskCheckInterval
// were shortened): at 10 s it fell at the tail of a 20,000-server
// rotation, a second's gap in its polls.
const (
	tickBudget = 30 * time.Second
	loopGap    = time.Second
)

// HandleTick runs one round of a rotation's driver: it polls the batches
// whose jobs are due and gathers servers due for another attempt into full
// batches (poll.go, retry.go), and side by side reads back the keypairs of
// servers whose job succeeded (verify.go), each under its own quota, for as
// long as work comes due within a second (up to tickBudget); then it starts
// the next wave, finishes the rotation, and schedules the next tick for
// when something is due. A rotation has one chain of ticks at a time,
// started by the first checkpoint and ended when nothing is in flight; a
// tick of an older chain, or one whose successor has started, does
// nothing.
func (h *Handler) HandleTick(ctx context.Context, t *asynq.Task) error {
	var p TickPayload
	if err := decode(t.Payload(), &p, TypeTick); err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := h.log.With("rotation", p.Rotation, "tick", fmt.Sprintf("%d.%d", p.Gen, p.Seq))
	if p.V > SchemaVersion {
		return h.unknownSchema(ctx, log, "task", p.V)
	}
	rot, err := h.store.Rotation(ctx, p.Rotation)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("tick: %w: %w", err, asynq.SkipRetry)
	}
	if err != nil {
		return err
	}
	if rot.Schema > SchemaVersion {
		// Before the claim: the chain stays the newer release's.
		return h.unknownSchema(ctx, log, "rotation", rot.Schema)
	}
	ok, err := h.store.ClaimTick(ctx, p.Rotation, p.Gen, p.Seq, h.now().Add(h.cfg.Tasks.Timeout))
	if err != nil || !ok {
		return err
	}
	deadline := h.now().Add(tickBudget)
	// Polls hand verification its work: a page is read as soon as the poll
	// that completed it is recorded.
	kick := make(chan struct{}, 1)
	var (
		polled               = make(chan struct{})
		pollNext, verNext    time.Time
		pollErr, verErr      error
		pollDone, verDone    bool
		finished1, finished2 bool
		wg                   sync.WaitGroup
	)
	// What a part's outcomes mean for its group is seen each round, not
	// when the tick ends: a tick may run for tickBudget.
	var seen groupSeen
	wg.Go(func() {
		defer close(polled)
		pollNext, pollDone, finished1, pollErr = h.loop(ctx, p.Rotation, deadline, nil, nil, func(rot *Rotation, r *round) error {
			if seen.changed(rot) {
				if err := h.watchGroup(ctx, rot); err != nil {
					return err
				}
			}
			r.kick = kick
			retry := func(rot *Rotation, r *round) error { return h.retry(ctx, log, rot, r) }
			if err := h.poll(ctx, log, rot, r, retry); err != nil {
				return err
			}
			return retry(rot, r)
		})
	})
	wg.Go(func() {
		verNext, verDone, finished2, verErr = h.loop(ctx, p.Rotation, deadline, polled, kick, func(rot *Rotation, r *round) error {
			return h.verify(ctx, log, rot, r)
		})
	})
	wg.Wait()
	if err := errors.Join(pollErr, verErr); err != nil {
		return err
	}
	if _, err := h.followUps(ctx, p.Rotation, finished1 || finished2); err != nil {
		return err
	}
	due, soonest := earliest(pollNext, verNext), h.now()
	if pollDone && verDone {
		soonest = soonest.Add(minTick)
	}
	if due.Before(soonest) {
		due = soonest
	}
	due, err = h.store.NextTick(ctx, p.Rotation, p.Gen, due, soonest)
	if err != nil || due.IsZero() {
		return err
	}
	_, err = enqueueTick(ctx, h.enq, h.store.ns, TickPayload{Rotation: p.Rotation, Gen: p.Gen, Seq: p.Seq + 1}, max(0, time.Until(due)), h.cfg.Tasks)
	return err
}

// loop runs stage in rounds while its next round comes due within loopGap
// (and, while others is open, while a stage that hands it work through
// kick is at work), up to deadline. It returns when the next round is due,
// whether the loop ran out of work (not out of time), and whether a round
// finished the rotation.
func (h *Handler) loop(ctx context.Context, id string, deadline time.Time, others, kick <-chan struct{}, stage func(*Rotation, *round) error) (next time.Time, idle, finished bool, err error) {
	for {
		rot, err := h.store.Rotation(ctx, id)
		if err != nil {
			return time.Time{}, false, finished, err
		}
		r := &round{now: h.now(), deadline: deadline}
		r.at(r.now.Add(h.cfg.PollCap))
		if err := stage(rot, r); err != nil {
			return time.Time{}, false, finished, err
		}
		if r.advanced {
			// The next wave's chunks go now, not when the tick ends.
			if _, err := h.followUps(ctx, id, false); err != nil {
				return time.Time{}, false, finished, err
			}
		}
		finished = finished || r.finished
		next := r.due()
		if r.finished || rot.Finished() {
			// Every server is terminal: nothing more comes due, and the
			// follow-ups (the completion event) must not wait for the
			// tick's budget to run out.
			return next, true, finished, nil
		}
		now := h.now()
		if now.After(deadline) {
			return next, false, finished, nil
		}
		wait := max(next.Sub(now), 50*time.Millisecond)
		if others == nil && wait > loopGap {
			return next, true, finished, nil
		}
		// Another stage is at work and may hand this one work: wait for
		// it, for this stage's next round, or for the other to end (and
		// look once more at what it did last).
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return next, false, finished, nil
		case <-others:
			others = nil
		case <-kick:
		case <-t.C:
		}
		t.Stop()
	}
}

func earliest(ts ...time.Time) time.Time {
	var e time.Time
	for _, t := range ts {
		if !t.IsZero() && (e.IsZero() || t.Before(e)) {
			e = t
		}
	}
	return e
}

// round is what one tick's stages found: when the next tick is due, and
// whether this one finished the rotation.
type round struct {
	now time.Time
	// deadline: a stage takes up no more work that comes due after it
	// (zero: only the work due at now).
	deadline time.Time
	kick     chan<- struct{} // told of servers put up for verification (nil: nobody listens)
	mu       sync.Mutex
	next     time.Time
	// held: the limiter holds the stage's calls back until then (a wait
	// longer than its MaxWait), so nothing the stage found due runs
	// sooner (see due).
	held     time.Time
	finished bool
	advanced bool // a wave ended and the next one started
}

// sub returns a round for work a stage takes up at now, while this
// round's calls are out: its own clock, this round's deadline and
// listener. merge folds it back in once the stage is done.
func (r *round) sub(now time.Time) *round {
	return &round{now: now, deadline: r.deadline, kick: r.kick}
}

// merge folds what a sub-round found into r.
func (r *round) merge(s *round) {
	s.mu.Lock()
	next, held, finished, advanced := s.next, s.held, s.finished, s.advanced
	s.mu.Unlock()
	r.at(next)
	r.mu.Lock()
	defer r.mu.Unlock()
	if held.After(r.held) {
		r.held = held
	}
	r.finished = r.finished || finished
	r.advanced = r.advanced || advanced
}

// verifying tells the verification stage that servers wait for it.
func (r *round) verifying() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
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

// waited asks for the next tick when a call that had to wait may go. A
// limiter's answer to come back later holds the whole stage until then:
// the work it left due (up to pollLimit batches, or pages to read) would
// otherwise be read again at every look, every 50 ms, only to wait again.
func (r *round) waited(err error) {
	var d *ratelimit.DelayError
	if errors.As(err, &d) {
		at := r.now.Add(d.RetryIn)
		r.at(at)
		r.mu.Lock()
		if at.After(r.held) {
			r.held = at
		}
		r.mu.Unlock()
		return
	}
	r.at(r.now.Add(minTick))
}

// due is when the stage should look again: the earliest work it found,
// but not before the limiter's next token when it had to wait for one.
// The stage's other work (the retry stage beside the polls) waits for
// the token with it: retry batches formed that much later cost less than
// the due batches read again every 50 ms.
func (r *round) due() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.next.Before(r.held) {
		return r.held
	}
	return r.next
}

func (r *round) resolved(res Resolved) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.finished = r.finished || res.Finished
	r.advanced = r.advanced || res.Advanced > 0
}

// followUps runs what follows recorded outcomes: the current wave's next
// chunks (topUp), which start the next wave once the current one is done,
// and the finished rotation's retention and completion event. All are
// idempotent, so a task that crashed after recording can run them again.
// It reports whether the rotation has finished.
func (h *Handler) followUps(ctx context.Context, id string, finishedNow bool) (bool, error) {
	rot, err := h.store.Rotation(ctx, id)
	if err != nil {
		return false, err
	}
	n, err := topUp(ctx, h.store, h.enq, rot, h.cfg.Tasks)
	if err != nil {
		return false, err
	}
	if rot.State == StateRunning && rot.Wave > rot.waveQueued {
		first, last := rot.chunksOf(rot.Wave)
		h.log.InfoContext(ctx, "wave started", "rotation", id, "wave", rot.Wave, "waves", len(rot.Waves),
			"chunks", last-first+1, "enqueued", n, "failed", rot.Counts.Failed, "max_errors", rot.MaxErrors)
	}
	if !rot.Finished() {
		return false, h.watchGroup(ctx, rot)
	}
	if finishedNow {
		h.log.InfoContext(ctx, "rotation finished", "rotation", id, "state", rot.State,
			"succeeded", rot.Counts.Succeeded, "failed", rot.Counts.Failed, "skipped", rot.Counts.Skipped,
			"cancelled", rot.Counts.Cancelled)
	}
	return true, finish(ctx, h.store, h.enq, rot, finishedNow, h.cfg.Tasks)
}

// finish runs a finished rotation's follow-ups: its completion event and
// the retention of its records (set by whoever finished it).
func finish(ctx context.Context, store *Store, enq Enqueuer, rot *Rotation, finishedNow bool, opts TaskOptions) error {
	opts = opts.withDefaults()
	// Not only when finishedNow: the task that finished the rotation may
	// have died before these, and its re-run must do them. The event goes
	// first, so a record with a retention has sent its event (the
	// watchdog finishes the others).
	if err := enqueueFinished(ctx, store, enq, rot, opts); err != nil {
		return err
	}
	if rot.Group != "" {
		// Its last failures count in the group's budget; then its place
		// goes to the next part, and the last part sends the group's
		// event. All before the retention, which marks a finish done.
		if _, err := watchGroup(ctx, store, enq, rot, opts); err != nil {
			return err
		}
		if err := StartWaiting(ctx, store, enq, rot.Group, opts); err != nil {
			return err
		}
		if err := finishGroup(ctx, store, enq, rot.Group, opts); err != nil {
			return err
		}
	}
	return store.Expire(ctx, rot, opts.Retention)
}

// groupSeen is what a tick last told the group of its part: a round
// with nothing new for the group reads nothing of it.
type groupSeen struct {
	failed int64
	state  State
}

// changed reports whether part rot has failures or a state the group has
// not been told of by this tick (always false outside a group).
func (s *groupSeen) changed(rot *Rotation) bool {
	if rot.Group == "" || rot.Counts.Failed == s.failed && rot.State == s.state {
		return false
	}
	s.failed, s.state = rot.Counts.Failed, rot.State
	return true
}

// watchGroup runs the group's watch (watchGroup) for part rot and logs
// a halt of the group it caused.
func (h *Handler) watchGroup(ctx context.Context, rot *Rotation) error {
	halted, err := watchGroup(ctx, h.store, h.enq, rot, h.cfg.Tasks)
	if halted != "" {
		h.log.ErrorContext(ctx, "rotation halted across its parts", "rotation", rot.Group, "part", rot.ID,
			"region", rot.Region, "project_id", rot.ProjectID, "reason", halted)
	}
	return err
}

// enqueueFinished enqueues the rotation's completion event once, with its
// history up to the end: its task ID is kept (Retention) for as long as
// the rotation's records, so a second finisher's enqueue is refused as a
// duplicate.
func enqueueFinished(ctx context.Context, store *Store, enq Enqueuer, rot *Rotation, opts TaskOptions) error {
	opts = opts.withDefaults()
	ret := opts.Retention
	if rot.Retention > 0 {
		ret = rot.Retention
	}
	hist, err := store.History(ctx, rot.ID)
	if err != nil {
		return err
	}
	s := Summary{Version: EventVersion, Rotation: rot.ID, State: rot.State, Reason: rot.Reason, Keypair: rot.Keypair, Counts: rot.Counts,
		Region: rot.Region, ProjectID: rot.ProjectID, Group: rot.Group,
		CreatedAt: rot.CreatedAt, FinishedAt: rot.FinishedAt, History: hist}
	_, err = enqueue(ctx, enq, TypeFinished, s, FinishedTaskID(rot.ID), asynq.Queue(store.ns.Queue(QueueEvents)), asynq.Retention(ret))
	return err
}
