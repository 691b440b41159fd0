package ratelimit

import (
	"errors"
	"fmt"
	"time"
)

// DelayError says a call should be retried after RetryIn rather than wait
// now: the wait would exceed Options.MaxWait or the context's deadline, or
// Redis is unreachable. A task handler returns it so that asynq puts the
// task back after RetryIn without counting a failure.
type DelayError struct {
	RetryIn time.Duration
	Err     error // why; nil when the limit alone is the reason
}

func (e *DelayError) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("rate limited: retry in %s", e.RetryIn)
	}
	return fmt.Sprintf("rate limited: retry in %s: %v", e.RetryIn, e.Err)
}

func (e *DelayError) Unwrap() error { return e.Err }

// IsDelay reports whether err is or wraps a *DelayError, and its delay.
func IsDelay(err error) (bool, time.Duration) {
	var d *DelayError
	if errors.As(err, &d) {
		return true, d.RetryIn
	}
	return false, 0
}
