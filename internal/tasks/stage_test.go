package tasks

import (
	"context"
	"fmt"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

func TestStageCallers(t *testing.T) {
	const ms = time.Millisecond
	tests := []struct {
		name    string
		rate    float64
		latency time.Duration
		want    int
	}{
		{"never called: one call, then what its answer shows", 20, 0, 1},
		{"answers in a few ms: two", 20, 5 * ms, 2},
		{"the default submit rate at 200 ms", 10, 200 * ms, 4},
		{"20/s at 300 ms: 6 needed", 20, 300 * ms, 9},
		{"20/s at 1 s: 20 needed", 20, time.Second, 26},
		{"cut to 9.5/s after a 429 at 1 s", 9.5, time.Second, 13},
		{"100/s at 1 s: the bound", 100, time.Second, MaxStageCalls},
		{"not limited: the bound", math.Inf(1), 300 * ms, MaxStageCalls},
		{"not limited, never called: the bound", math.Inf(1), 0, MaxStageCalls},
		{"no rate: one", 0, time.Second, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := stageCallers(tt.rate, tt.latency); got != tt.want {
				t.Fatalf("stageCallers(%v, %v) = %d, want %d", tt.rate, tt.latency, got, tt.want)
			}
			// Below the bound, enough for the whole quota.
			if need := tt.rate * tt.latency.Seconds(); tt.want < MaxStageCalls && float64(tt.want) < need {
				t.Fatalf("%d in flight cannot be granted %v calls a second at %v", tt.want, tt.rate, tt.latency)
			}
		})
	}
}

func TestLatencies(t *testing.T) {
	const ms = time.Millisecond
	l := newLatencies()
	steps := []struct {
		observed, want time.Duration
	}{
		{300 * ms, 300 * ms},  // the first answer sets it
		{1100 * ms, 400 * ms}, // then each moves it an eighth of the way
		{400 * ms, 400 * ms},
		{0, 350 * ms},
	}
	for _, st := range steps {
		l.observe(APIListJobs, st.observed)
		if got := l.of(APIListJobs); got != st.want {
			t.Fatalf("after %v: latency %v, want %v", st.observed, got, st.want)
		}
	}
	if got := l.of(APIListServers); got != 0 {
		t.Fatalf("latency of an API never called = %v, want 0", got)
	}
}

// rated grants every call at once and says it grants rate a second.
type rated float64

func (rated) Wait(context.Context, string) error                              { return nil }
func (rated) Throttled(context.Context, string, time.Duration, float64) error { return nil }
func (r rated) Rate(string) float64                                           { return float64(r) }

// slowJobs is a ListJobs whose answers wait until the test lets them go,
// so a test sees how many calls a stage has in flight, without timing
// anything.
type slowJobs struct {
	failOnceAPI
	started chan struct{} // a call came in
	release chan struct{} // a receive lets one call answer; closed, all
	mu      sync.Mutex
	now     int // calls in flight
	peak    int
	total   int // calls so far
}

func newSlowJobs() *slowJobs {
	return &slowJobs{started: make(chan struct{}, 1000), release: make(chan struct{})}
}

func (a *slowJobs) ListJobsOf(ctx context.Context, _ int, _ ...string) ([]cph.Job, error) {
	a.mu.Lock()
	a.now++
	a.total++
	a.peak = max(a.peak, a.now)
	a.mu.Unlock()
	a.started <- struct{}{}
	defer func() {
		a.mu.Lock()
		a.now--
		a.mu.Unlock()
	}()
	select {
	case <-a.release:
		return nil, nil // every job still running
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (a *slowJobs) made() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.total
}

func (a *slowJobs) inFlight() (now, peak int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.now, a.peak
}

// awaitStarts waits for n more calls to come in. The deadline only keeps
// a broken stage from hanging the test; nothing is timed.
func (a *slowJobs) awaitStarts(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(30 * time.Second)
	for i := range n {
		select {
		case <-a.started:
		case <-deadline:
			now, _ := a.inFlight()
			t.Fatalf("%d of %d calls came in (%d in flight)", i, n, now)
		}
	}
}

// pollRig is a rotation of chunks batches of 100 servers each, all
// checkpointed at now, so its poll stage makes one ListJobs call a batch.
// Batch n's poll is due at now + dueIn(n); nil: all are due.
func pollRig(t *testing.T, chunks int, api API, lim Limiter, now time.Time, dueIn func(n int) time.Duration) (*Handler, *Rotation) {
	t.Helper()
	ctx := context.Background()
	store := NewStore(testredis.Mini(t).Client(t), "")
	var cs [][]Entry
	for c := range chunks {
		ids := make([]string, cph.JobsPageSize)
		for i := range ids {
			ids[i] = fmt.Sprintf("s%03d-%03d", c, i)
		}
		cs = append(cs, entries(ids...))
	}
	rot := testRotation("r1", cs)
	rot.ChunkSize = cph.JobsPageSize
	if dueIn == nil {
		dueIn = func(int) time.Duration { return -time.Second }
	}
	if _, err := store.Create(ctx, rot, cs, nil, now); err != nil {
		t.Fatal(err)
	}
	for n, c := range cs {
		jobs := map[string]string{}
		for _, e := range c {
			jobs[e.ServerID] = "job-" + e.ServerID
		}
		if _, err := store.Checkpoint(ctx, "r1", n+1, len(c), fmt.Sprintf("req-%d", n+1), jobs, nil, now, now.Add(dueIn(n+1))); err != nil {
			t.Fatal(err)
		}
	}
	h := NewHandler(HandlerOptions{Store: store, API: api, Limiter: lim})
	return h, mustRotation(t, store, "r1")
}

// A tick's stage keeps rate × latency calls in flight (and its margin),
// so a slow API still has its whole quota used: 20/s at 1 s is 20 calls
// out at once, where a fixed 4 would be granted 4 a second.
func TestStageKeepsRateTimesLatencyInFlight(t *testing.T) {
	tests := []struct {
		name    string
		rate    float64
		latency time.Duration // what the API's answers have shown
	}{
		{"20/s at 1 s", 20, time.Second},
		{"20/s at 300 ms", 20, 300 * time.Millisecond},
		{"cut to 9.5/s after a 429, at 1 s", 9.5, time.Second},
		{"20/s at 10 ms", 20, 10 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			api := newSlowJobs()
			at := time.Now()
			h, rot := pollRig(t, 40, api, rated(tt.rate), at, nil)
			// The clock stands still: the answers below take no time, so
			// only the latency given here sizes the stage.
			h.now = func() time.Time { return at }
			h.lat.observe(APIListJobs, tt.latency)
			want := stageCallers(tt.rate, tt.latency)
			if need := int(math.Ceil(tt.rate * tt.latency.Seconds())); want < need {
				t.Fatalf("%d in flight, %d needed", want, need)
			}

			done := make(chan error, 1)
			go func() { done <- h.poll(context.Background(), h.log, rot, &round{now: at}, nil) }()
			api.awaitStarts(t, want)
			if now, _ := api.inFlight(); now != want {
				t.Fatalf("%d calls in flight, want %d", now, want)
			}
			close(api.release)
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if _, peak := api.inFlight(); peak != want {
				t.Fatalf("at most %d calls were in flight, want %d", peak, want)
			}
		})
	}
}

// A stage that starts before its API has answered once keeps one call
// out, and widens as soon as that answer shows the latency.
func TestStageWidensWithTheFirstAnswer(t *testing.T) {
	api := newSlowJobs()
	at := time.Now()
	h, rot := pollRig(t, 40, api, rated(20), at, nil)
	var mu sync.Mutex
	h.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return at
	}
	done := make(chan error, 1)
	go func() { done <- h.poll(context.Background(), h.log, rot, &round{now: at}, nil) }()

	api.awaitStarts(t, 1)
	mu.Lock()
	at = at.Add(time.Second) // the first answer takes a second
	mu.Unlock()
	api.release <- struct{}{}
	want := stageCallers(20, time.Second)
	api.awaitStarts(t, want)
	if now, _ := api.inFlight(); now != want {
		t.Fatalf("%d calls in flight after a 1 s answer, want %d", now, want)
	}
	close(api.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, peak := api.inFlight(); peak != want {
		t.Fatalf("at most %d calls were in flight, want %d", peak, want)
	}
}

// Batches that come due while a stage's calls are out join them at once:
// the stage does not wait for its slowest call before it takes up more,
// and polls each batch once. What runs alongside the polls (the retries)
// runs with those looks, not only once the stage has ended.
func TestStageTakesUpWorkThatComesDue(t *testing.T) {
	api := newSlowJobs()
	at := time.Now()
	// Batches 1-10 are due now, 11-30 a second later.
	h, rot := pollRig(t, 30, api, rated(20), at, func(n int) time.Duration {
		if n <= 10 {
			return -time.Second
		}
		return time.Second
	})
	var mu sync.Mutex
	now := at
	h.now = func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	// 26 in flight; 30 once the answer below has taken 2 s (an average of
	// 1.125 s).
	h.lat.observe(APIListJobs, time.Second)
	done := make(chan error, 1)
	alongside := make(chan time.Time, 10)
	go func() {
		done <- h.poll(context.Background(), h.log, rot, &round{now: at, deadline: at.Add(tickBudget)}, func(_ *Rotation, sub *round) error {
			alongside <- sub.now
			return nil
		})
	}()
	api.awaitStarts(t, 10)
	mu.Lock()
	now = at.Add(2 * time.Second)
	mu.Unlock()
	api.release <- struct{}{} // one answer: the stage looks for more
	api.awaitStarts(t, 20)
	if n, _ := api.inFlight(); n != 29 {
		t.Fatalf("%d calls in flight, want the 9 left of the first 10 and the 20 that came due", n)
	}
	select {
	case got := <-alongside:
		if !got.Equal(now) {
			t.Fatalf("alongside ran at %v, want with the look at %v", got, now)
		}
	default:
		t.Fatal("alongside did not run with the stage's look a loop gap later")
	}
	close(api.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := api.made(); got != 30 {
		t.Fatalf("%d ListJobs calls, want 30: one a batch", got)
	}
}
