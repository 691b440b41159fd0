package tasks

import (
	"context"
	"log/slog"
)

// retry gathers servers whose backoff has ended from the retry pool into
// batches of the chunk size, across the rotation's chunks, and submits
// every batch formed, on the queue of started work (rekey-poll), ahead of
// the first attempts still waiting. A smaller batch goes only when nothing in flight can
// add to it (no batch is being polled and every server of the pool is
// due), or when its servers have waited Config.Linger. Attempts stay
// counted per server.
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
		full := pool.Due >= rot.ChunkSize
		settled := pool.Due == pool.Size && polls == 0
		lingered := r.now.Sub(pool.Oldest) >= h.cfg.Linger
		if !full && !settled && !lingered {
			r.at(pool.Oldest.Add(h.cfg.Linger))
			break
		}
		k, err := h.store.FormBatch(ctx, rot.ID, next, rot.ChunkSize, !full, r.now)
		if err != nil {
			return err
		}
		if k < 0 {
			return nil // another tick is forming batches: it submits them
		}
		if k == 0 {
			break
		}
		log.InfoContext(ctx, "retry batch formed", "chunk", next, "servers", k, "full", full)
		next++
		if pool, err = h.store.RetryPool(ctx, rot.ID, r.now); err != nil {
			return err
		}
	}
	r.at(pool.Next)
	fresh, err := h.store.Fresh(ctx, rot.ID)
	if err != nil {
		return err
	}
	for _, n := range fresh {
		b, err := h.store.Batch(ctx, rot.ID, n)
		if err != nil {
			return err
		}
		// On the queue of work already started, so a retry batch goes
		// before the first attempts still waiting in rekey-submit.
		if _, err := enqueueSubmit(ctx, h.enq, QueuePoll, SubmitPayload{Rotation: rot.ID, Batch: n, Servers: len(b.Servers)}, h.cfg.Tasks); err != nil {
			return err
		}
	}
	if len(fresh) > 0 {
		// Their submits' checkpoints take them off the fresh set; a tick
		// comes back to resubmit any whose task was lost.
		r.at(r.now.Add(h.cfg.PollCap))
	}
	return nil
}
