package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// holdWhileRedisDown is asynq middleware that keeps a task that has ended
// on its worker slot while Redis cannot be reached, and hands its result
// to asynq only once Redis answers again.
//
// asynq writes a task's outcome (done, retry, archive) right after the
// handler returns. When that write fails it queues a "retry syncing"
// request, but the request reuses a context asynq has already cancelled
// (asynq v0.26.0 processor.go: markAsDone, markAsComplete, retry and
// archive each `defer cancel()` the context their sync closure captures),
// so the write never happens: the task stays active until its 30 s lease
// has expired and the recoverer, which looks every minute and only at
// leases expired more than 30 s ago, takes it back. One task ending during
// a 2 s failover thus stalled its chunk for 1–2 minutes. Holding the task
// until Redis is back lets asynq's own write succeed; the heartbeater keeps
// the lease meanwhile. A task whose context ends (lease lost, timeout,
// shutdown) is handed back at once, as without this middleware.
//
// ping is called with the task's queue: on a Redis Cluster only the
// queue's slot (where asynq writes the result) has to be back.
func holdWhileRedisDown(ping func(ctx context.Context, queue string) error, every time.Duration, log *slog.Logger) asynq.MiddlewareFunc {
	return func(next asynq.Handler) asynq.Handler {
		return asynq.HandlerFunc(func(ctx context.Context, t *asynq.Task) error {
			err := next.ProcessTask(ctx, t)
			queue, _ := asynq.GetQueueName(ctx)
			held := time.Time{}
			for {
				pctx, cancel := context.WithTimeout(ctx, every)
				perr := ping(pctx, queue)
				cancel()
				if perr == nil {
					if !held.IsZero() {
						id, _ := asynq.GetTaskID(ctx)
						log.InfoContext(ctx, "Redis is back; handing the task's result to asynq", "task_id", id, "held", time.Since(held).Round(time.Millisecond).String())
					}
					return err
				}
				if held.IsZero() {
					held = time.Now()
					id, _ := asynq.GetTaskID(ctx)
					log.WarnContext(ctx, "Redis unreachable as a task ended; holding it until Redis is back so asynq can record its result", "task_id", id, "err", perr)
				}
				select {
				case <-ctx.Done():
					return err
				case <-time.After(every):
				}
			}
		})
	}
}

// queueProbe returns a ping for holdWhileRedisDown: a read of a key in the
// queue's hash slot (asynq's "asynq:{<queue>}:paused"), which a cluster
// routes to the master asynq will write to; a plain PING without a queue.
func queueProbe(rdb redis.UniversalClient) func(context.Context, string) error {
	return func(ctx context.Context, queue string) error {
		if queue == "" {
			return rdb.Ping(ctx).Err()
		}
		return rdb.Exists(ctx, "asynq:{"+queue+"}:paused").Err()
	}
}
