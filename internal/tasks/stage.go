package tasks

import (
	"context"
	"math"
	"sync"
	"time"
)

// How many calls of one API a stage of a tick keeps in flight follows
// Little's law: to be granted rate calls a second when each answer takes
// latency, rate × latency calls must be out at once. A stage keeps that
// many and a margin: callMargin for an average that trails a slower API
// and for answers that vary, and one more for the work around each call
// (the limiter's grant, recording what it found), which holds the slot
// but is not timed. The bound keeps one tick's connections few: 32 calls
// fill a 20/s quota at any round trip up to 1.2 s, or 100/s up to 250 ms.
const (
	MaxStageCalls = 32
	callMargin    = 1.25
	// latencyGain is the weight of a new answer in an API's average
	// latency, as TCP's smoothed round trip (RFC 6298): a few slow answers
	// widen a stage by little, a lasting change moves it within a few
	// dozen calls.
	latencyGain = 1.0 / 8
)

// MaxTickCalls is the most API calls one tick has in flight: its stages
// call ListJobs, ListServers and ShowServer, each up to MaxStageCalls at
// once. A worker's connection pool should keep that many on top of its
// task slots.
const MaxTickCalls = 3 * MaxStageCalls

// stageCallers is how many calls of an API a stage keeps in flight when
// the limiter grants it rate calls a second and its answers take latency:
// rate × latency × callMargin, rounded up, and one more, within 1 and
// MaxStageCalls. An API without a limit (rate +Inf) gets the bound.
func stageCallers(rate float64, latency time.Duration) int {
	n := math.Ceil(rate*latency.Seconds()*callMargin) + 1
	if math.IsNaN(n) || n > MaxStageCalls {
		return MaxStageCalls
	}
	return max(int(n), 1)
}

// latencies keeps, per API, the average time this process's calls of it
// took to answer (an exponentially weighted moving average). An API not
// called yet has latency 0: its stage starts with one call in flight and
// widens when that call answers.
type latencies struct {
	mu  sync.Mutex
	avg map[string]time.Duration
}

func newLatencies() *latencies { return &latencies{avg: map[string]time.Duration{}} }

// observe folds one call's duration into api's average; the first sets it.
func (l *latencies) observe(api string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	old, ok := l.avg[api]
	if !ok {
		l.avg[api] = d
		return
	}
	l.avg[api] = old + time.Duration(latencyGain*float64(d-old))
}

// of returns api's average latency (0: never called).
func (l *latencies) of(api string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.avg[api]
}

// callers is how many calls of api a stage keeps in flight now: from the
// rate the limiter grants (lowered after 429s) and the latency this
// process's calls of api have shown.
func (h *Handler) callers(lim Limiter, api string) int {
	return stageCallers(lim.Rate(api), h.lat.of(api))
}

// stageCall is one unit of a stage's work: fn waits for a token of api,
// makes the call (or a few, one after another) and records what it found.
// It reports whether the stage should start no more (a token that must be
// waited for, a 429, a denial).
type stageCall struct {
	api string
	fn  func(ctx context.Context) (stop bool, err error)
}

// askGap spaces a stage's looks for work that has come due while its calls
// are out (each reads Redis), as the tick's rounds are spaced.
const askGap = 100 * time.Millisecond

// stream runs a stage's calls (runStage) and, while they are out, the
// calls look finds in the rotation read afresh: each look a round of its
// own (r.sub), merged into r at the end. It looks no more past r's
// deadline, once the rotation has finished, or while stop (if not nil)
// says so.
func (h *Handler) stream(ctx context.Context, r *round, rot *Rotation, calls []stageCall, stop func() bool, look func(rot *Rotation, sub *round) ([]stageCall, error)) error {
	var subs []*round
	more := func() ([]stageCall, error) {
		now := h.now()
		if !now.Before(r.deadline) || stop != nil && stop() {
			return nil, nil
		}
		rot, err := h.store.Rotation(ctx, rot.ID)
		if err != nil || rot.Finished() {
			return nil, err
		}
		sub := r.sub(now)
		subs = append(subs, sub)
		return look(rot, sub)
	}
	err := h.runStage(ctx, h.limiterOf(rot), calls, more)
	for _, sub := range subs {
		r.merge(sub)
	}
	return err
}

// runStage runs calls in order, keeping in flight as many of each API as
// h.callers allows under lim, asked afresh before each start: the first answers
// widen a stage that started before its API was timed, and a rate cut
// narrows it. Once calls run out, and while some are out, more (if not
// nil) is asked for the work that has come due since, again after a call
// ends (at most every askGap): a slow API's calls then overlap instead of
// waiting for the slowest of a round. It starts no more once one returns
// stop or an error, or ctx is done, and returns the first error.
func (h *Handler) runStage(ctx context.Context, lim Limiter, calls []stageCall, more func() ([]stageCall, error)) error {
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		ended   = sync.NewCond(&mu) // a call ended: a slot is free, or the stage stopped
		busy    = map[string]int{}
		out     int       // calls in flight
		ends    int       // calls ended so far
		dry     bool      // more had nothing, and no call has ended since
		asked   time.Time // when more was last asked
		stopped bool
		first   error
	)
	mu.Lock()
	for !stopped {
		if len(calls) == 0 {
			// Only while calls are out: with none, the round is over and
			// the stage's next one looks.
			if more == nil || dry || out == 0 {
				if out == 0 {
					break
				}
				ended.Wait()
				continue
			}
			seen := ends
			mu.Unlock()
			next, err := ask(ctx, more, askGap-time.Since(asked))
			asked = time.Now()
			mu.Lock()
			// A call that ended while more looked may have left work
			// more did not see: ask again rather than wait for the next.
			calls, dry = next, len(next) == 0 && ends == seen
			if err != nil {
				stopped = true
				if first == nil {
					first = err
				}
			}
			continue
		}
		c := calls[0]
		if busy[c.api] >= h.callers(lim, c.api) {
			ended.Wait()
			continue
		}
		calls = calls[1:]
		busy[c.api]++
		out++
		wg.Go(func() {
			stop, err := c.fn(ctx)
			mu.Lock()
			busy[c.api]--
			out--
			ends++
			dry = false
			stopped = stopped || stop || err != nil
			if first == nil {
				first = err
			}
			mu.Unlock()
			ended.Broadcast()
		})
	}
	mu.Unlock()
	wg.Wait()
	return first
}

// ask asks more for a stage's next calls after wait, unless ctx is done
// first.
func ask(ctx context.Context, more func() ([]stageCall, error), wait time.Duration) ([]stageCall, error) {
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
	return more()
}
