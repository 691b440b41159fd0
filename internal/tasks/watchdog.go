package tasks

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
)

// TypeWatchdog is the type of the watchdog's periodic task.
const TypeWatchdog = "rotation:watchdog"

// WatchdogTaskID is the watchdog task's one ID. Every worker's scheduler
// enqueues it, and asynq refuses it while one is queued, running, or kept
// after it ran (RegisterWatchdog's retention): the workers together run
// it about once an interval, whichever of them holds it.
const WatchdogTaskID = "watchdog"

// DefaultWatchdogInterval is how often the watchdog looks: a rotation
// stalled by a lost task moves again within it.
const DefaultWatchdogInterval = time.Minute

// TaskInspector finds and deletes asynq tasks (asynq.Inspector does).
type TaskInspector interface {
	GetTaskInfo(queue, id string) (*asynq.TaskInfo, error)
	DeleteTask(queue, id string) error
}

// NewWatchdogScheduler returns an asynq scheduler, to be started by
// every worker, that enqueues the watchdog of namespace ns every interval
// (each namespace's on its own queue, so its own ID). The task is
// kept half an interval after it ran, so the schedulers of several
// workers, firing at their own moments, run it at most twice an interval
// and at least once; a run that fails is retried, not archived (an
// archived task would keep its ID, and the watchdog, away for ever).
// Enqueues refused because another worker's task is there are not errors;
// others are logged.
func NewWatchdogScheduler(conn asynq.RedisConnOpt, ns Namespace, interval time.Duration, opts TaskOptions, log *slog.Logger) (*asynq.Scheduler, error) {
	if interval <= 0 {
		return nil, fmt.Errorf("watchdog interval %s: want a positive duration", interval)
	}
	opts = opts.withDefaults()
	sch := asynq.NewScheduler(conn, &asynq.SchedulerOpts{
		LogLevel: asynq.WarnLevel,
		PostEnqueueFunc: func(_ *asynq.TaskInfo, err error) {
			if err != nil && !errors.Is(err, asynq.ErrTaskIDConflict) {
				log.Warn("enqueue the watchdog", "err", err)
			}
		},
	})
	_, err := sch.Register("@every "+interval.String(), asynq.NewTask(TypeWatchdog, nil),
		asynq.TaskID(WatchdogTaskID), asynq.Queue(ns.Queue(QueuePoll)), asynq.MaxRetry(neverArchive),
		asynq.Timeout(opts.Timeout), asynq.Retention(interval/2))
	if err != nil {
		return nil, fmt.Errorf("register the watchdog every %s: %w", interval, err)
	}
	return sch, nil
}

// HandleWatchdog finds rotations that nothing moves any more and moves
// them: a tick chain whose task is gone (deleted or archived through the
// asynq UI, or lost with writes a failed-over Redis lost), submit tasks of
// enqueued batches that are gone, a cancel cut short, a finished rotation
// whose completion event was never sent. Every step is one a task or a
// control would take, and idempotent, so two watchdogs at once, or one
// racing a tick, do nothing twice.
func (h *Handler) HandleWatchdog(ctx context.Context, _ *asynq.Task) error {
	const page = 100
	var errs []error
	for offset := 0; ; offset += page {
		rots, total, err := h.store.RotationsPage(ctx, offset, page)
		if err != nil {
			return err
		}
		for _, rot := range rots {
			if err := h.watch(ctx, rot); err != nil {
				errs = append(errs, err)
			}
		}
		if offset+page >= total {
			break
		}
	}
	// One rotation's error does not hold the others up; asynq runs the
	// watchdog again for it.
	return errors.Join(errs...)
}

// watch moves one rotation on, if nothing else does.
func (h *Handler) watch(ctx context.Context, rot *Rotation) error {
	log := h.log.With("rotation", rot.ID, "watchdog", true)
	if rot.Schema > SchemaVersion {
		return nil // a newer release's rotation: its own watchdog moves it
	}
	if rot.Finished() {
		done, err := h.store.Retained(ctx, rot.ID)
		if err != nil || done {
			return err
		}
		log.WarnContext(ctx, "finished rotation without its completion event or retention: completing them")
		return finish(ctx, h.store, h.enq, rot, false, h.cfg.Tasks)
	}
	if rot.State == StateCancelled && !rot.cancelClosed {
		// A cancel cut short left batches that no task will close.
		_, closed, err := Cancel(ctx, h.store, h.enq, rot.ID, SystemActor, h.cfg.Tasks, h.now())
		if err != nil {
			return err
		}
		if closed > 0 {
			log.WarnContext(ctx, "completed a cancel cut short", "closed", closed)
		}
	}
	if err := h.reviveTicks(ctx, log, rot.ID); err != nil {
		return err
	}
	if rot.State != StateRunning {
		return nil
	}
	if err := h.resubmitLost(ctx, log, rot); err != nil {
		return err
	}
	_, err := topUp(ctx, h.store, h.enq, rot, h.cfg.Tasks)
	return err
}

// reviveTicks starts a new tick chain for a rotation whose chain's task is
// gone, or that has work in flight and no chain.
func (h *Handler) reviveTicks(ctx context.Context, log *slog.Logger, id string) error {
	c, err := h.store.TickChain(ctx, id)
	if err != nil {
		return err
	}
	now := h.now()
	if !c.Live {
		return wake(ctx, h.store, h.enq, id, h.cfg.Tasks, now)
	}
	if h.ins == nil {
		return nil
	}
	tick := c.Task()
	gone, err := h.taskGone(h.store.ns.Queue(QueuePoll), TickTaskID(id, tick.Gen, tick.Seq))
	if err != nil || !gone {
		return err
	}
	gen, err := h.store.Revive(ctx, id, c, now)
	if err != nil || gen == 0 {
		return err
	}
	log.WarnContext(ctx, "tick task gone: a new tick chain started", "lost", fmt.Sprintf("%d.%d", tick.Gen, tick.Seq), "gen", gen)
	_, err = enqueueTick(ctx, h.enq, h.store.ns, TickPayload{Rotation: id, Gen: gen, Seq: 1}, 0, h.cfg.Tasks)
	return err
}

// resubmitLost enqueues again the submit tasks of enqueued batches (first
// attempts up to the last chunk enqueued, and retry batches formed) that
// have no checkpoint and whose task is gone, deleting archived ones first
// (with an Inspector).
func (h *Handler) resubmitLost(ctx context.Context, log *slog.Logger, rot *Rotation) error {
	var clear func(queue, id string) error
	if h.ins != nil {
		clear = func(queue, id string) error {
			_, err := h.taskGone(queue, id)
			return err
		}
	}
	again, err := requeue(ctx, h.store, h.enq, rot, h.cfg.Tasks, clear)
	if len(again) > 0 {
		log.WarnContext(ctx, "submit tasks gone: enqueued again", "batches", again)
	}
	return err
}

// taskGone reports whether task id is not in queue, or was archived (it
// is deleted then, so its ID can be used again).
func (h *Handler) taskGone(queue, id string) (bool, error) {
	info, err := h.ins.GetTaskInfo(queue, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return true, nil
	case err != nil:
		return false, fmt.Errorf("look up task %s: %w", id, err)
	case info.State != asynq.TaskStateArchived:
		return false, nil
	}
	if err := h.ins.DeleteTask(queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
		return false, fmt.Errorf("delete archived task %s: %w", id, err)
	}
	return true, nil
}
