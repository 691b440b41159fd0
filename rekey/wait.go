package rekey

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// WaitOptions tune Wait. The zero value reads every 2 s and rides through
// Redis outages of up to 5 minutes.
type WaitOptions struct {
	// Interval is the time between reads. Zero: 2 s.
	Interval time.Duration
	// MaxOutage is how long Wait rides through Redis being unavailable
	// (a failover, a restart) before it gives up with ErrRedisUnavailable.
	// Zero: 5 minutes.
	MaxOutage time.Duration
	// ThroughHalt keeps waiting when the error budget halts the rotation
	// (until an operator resumes or cancels it). False: Wait returns the
	// halted rotation, since it waits for a person.
	ThroughHalt bool
	// Progress, when set, is called with every rotation read; an error it
	// returns ends Wait with that error.
	Progress func(*Rotation) error
	// RedisDown, when set, is called for every failed read during an
	// outage, with the wait before the next; RedisBack when a read works
	// again, with the outage's length.
	RedisDown func(err error, retryIn time.Duration)
	RedisBack func(after time.Duration)
}

// Wait blocks until rotation id has finished (or its error budget halted
// it, unless opts.ThroughHalt) and returns it. A rotation that ended
// without succeeding is not an error: its State says how it ended. Reads
// that fail because Redis is unavailable are retried with backoff (250 ms
// doubling to 5 s) for up to opts.MaxOutage. Errors: ErrNotFound,
// ErrRedisUnavailable (the outage lasted too long), ctx's error.
func (c *Client) Wait(ctx context.Context, id string, opts WaitOptions) (*Rotation, error) {
	if opts.Interval <= 0 {
		opts.Interval = 2 * time.Second
	}
	if opts.MaxOutage <= 0 {
		opts.MaxOutage = 5 * time.Minute
	}
	var down time.Time // start of the current outage
	fails := 0
	for {
		rot, err := c.Rotation(ctx, id)
		if errors.Is(err, ErrRedisUnavailable) && ctx.Err() == nil {
			now := time.Now()
			if down.IsZero() {
				down = now
			}
			if now.Sub(down) > opts.MaxOutage {
				return nil, fmt.Errorf("redis unavailable for %s, giving up: %w", now.Sub(down).Round(time.Second), err)
			}
			fails++
			d := min(250*time.Millisecond<<min(fails-1, 5), 5*time.Second)
			if opts.RedisDown != nil {
				opts.RedisDown(err, d)
			}
			if err := sleep(ctx, d); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if !down.IsZero() {
			if opts.RedisBack != nil {
				opts.RedisBack(time.Since(down))
			}
			down, fails = time.Time{}, 0
		}
		if opts.Progress != nil {
			if err := opts.Progress(rot); err != nil {
				return rot, err
			}
		}
		if rot.Finished() || rot.Halted() && !opts.ThroughHalt {
			return rot, nil
		}
		if err := sleep(ctx, opts.Interval); err != nil {
			return nil, err
		}
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
