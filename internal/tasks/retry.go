package tasks

import (
	"context"
	"log/slog"
	"time"
)

// retry gathers servers whose backoff has ended from the retry pool into
// batches of the chunk size, across the rotation's chunks, and submits
// each batch once, as it is formed, on the queue of started work
// (rekey-poll), ahead of the first attempts still waiting; a batch whose
// task is lost is enqueued again by the watchdog. A smaller batch goes
// when waiting cannot fill it soon (see formRetry). Attempts stay counted
// per server.
func (h *Handler) retry(ctx context.Context, log *slog.Logger, rot *Rotation, r *round) error {
	pool, err := h.store.RetryPool(ctx, rot.ID, r.now)
	if err != nil {
		return err
	}
	next := rot.Batches + 1
	polls := -1
	for pool.Due > 0 {
		if polls < 0 {
			if polls, err = h.store.Polling(ctx, rot.ID); err != nil {
				return err
			}
		}
		in := retryPool{Pool: pool, chunk: rot.ChunkSize, polling: polls, queued: queuedFirst(rot, pool),
			joinable: joinable(rot.Counts), waited: r.now.Sub(pool.Oldest), patience: h.cfg.RetryBase, linger: h.cfg.Linger}
		form, partial := formRetry(in)
		if !form {
			// Back when patience ends, or else the linger; what else
			// changes the decision (a poll, a submit) comes with a poll.
			wake := pool.Oldest.Add(h.cfg.Linger)
			if at := pool.Oldest.Add(h.cfg.RetryBase); at.After(r.now) {
				wake = at
			}
			r.at(wake)
			break
		}
		k, err := h.store.FormBatch(ctx, rot.ID, next, rot.ChunkSize, partial, r.now)
		if err != nil {
			return err
		}
		if k < 0 {
			return nil // another tick is forming batches: it submits them
		}
		if k == 0 {
			break
		}
		log.InfoContext(ctx, "retry batch formed", "chunk", next, "servers", k, "full", !partial)
		// On the queue of work already started, so a retry batch goes
		// before the first attempts still waiting in rekey-submit.
		if _, err := enqueueSubmit(ctx, h.enq, h.store.ns.Queue(QueuePoll), SubmitPayload{Rotation: rot.ID, Batch: next, Servers: k}, h.cfg.Tasks); err != nil {
			return err
		}
		next++
		if pool, err = h.store.RetryPool(ctx, rot.ID, r.now); err != nil {
			return err
		}
	}
	r.at(pool.Next)
	return nil
}

// retryPool is what the decision to form a retry batch looks at.
type retryPool struct {
	Pool
	chunk    int           // the chunk size: a full batch
	polling  int           // batches being polled
	queued   int           // servers waiting for a submit that are not in the pool
	joinable float64       // transient failures expected of the jobs still running
	waited   time.Duration // since the pool's earliest backoff ended
	patience time.Duration // Config.RetryBase
	linger   time.Duration // Config.Linger
}

// formRetry decides whether the pool's due servers form a batch now, and
// whether it may be smaller than a chunk. A full batch always goes. A
// smaller one goes when nothing can join it (no server in backoff and no
// batch being polled) or when its servers have waited Config.Linger; and,
// once the submit quota has nothing else to do (no server waits for a
// submit outside the pool), as soon as nothing more is expected (every
// pooled server is due and the running jobs, at the share of ended jobs
// that failed, should add none) or its servers have waited one backoff
// base for company. While first attempts keep the quota busy, retries
// wait for full batches (a batch per chunk of retried servers); at the
// tail, with the quota idle, a retry round never waits more than a
// backoff base for company, which costs a small batch or two a round.
func formRetry(p retryPool) (form, partial bool) {
	switch {
	case p.Due <= 0:
		return false, false
	case p.Due >= p.chunk:
		return true, false
	case p.Due == p.Size && p.polling == 0, p.waited >= p.linger:
		return true, true
	case p.queued > 0:
		return false, false
	}
	if p.Due == p.Size && p.joinable < 1 || p.waited >= p.patience {
		return true, true
	}
	return false, false
}

// queuedFirst counts the servers of the rotation's current wave that wait
// for a submit and are not in the retry pool: first attempts not submitted
// yet, and retry batches formed and not submitted yet. Later waves start
// only once this one has ended, so their servers do not count.
func queuedFirst(rot *Rotation, pool Pool) int {
	n := int(rot.Counts.Pending) - pool.Size
	for w := rot.Wave + 1; w <= len(rot.Waves); w++ {
		n -= rot.Waves[w-1].Servers
	}
	return max(n, 0)
}

// joinable estimates how many of the jobs still running will fail
// transiently and join the retry pool: as many as the share of the ended
// jobs that did.
func joinable(c Counts) float64 {
	running := c.Running - c.Verifying // jobs not seen to end
	ended := c.Submitted - running
	if running <= 0 || ended <= 0 {
		return 0
	}
	return float64(running) * min(float64(c.Retried)/float64(ended), 1)
}
