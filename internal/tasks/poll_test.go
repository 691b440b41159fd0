package tasks

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

func TestStoreJobLatency(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		chunks := [][]Entry{entries("a")}
		if _, err := s.Create(ctx, testRotation("r1", chunks), chunks, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
		if got := mustRotation(t, s, "r1").jobLatency; got != 0 {
			t.Fatalf("job latency before any observation = %v, want 0", got)
		}
		steps := []struct {
			observed, want time.Duration
		}{
			{2 * time.Second, 2 * time.Second},
			{3 * time.Second, 3 * time.Second},         // a longer job: at once
			{1 * time.Second, 2750 * time.Millisecond}, // a shorter one: an eighth of the gap
			{2750 * time.Millisecond, 2750 * time.Millisecond},
		}
		for _, st := range steps {
			got, err := s.ObserveJobLatency(ctx, "r1", st.observed)
			if err != nil || got != st.want {
				t.Fatalf("ObserveJobLatency(%v) = %v, %v; want %v", st.observed, got, err, st.want)
			}
			if rot := mustRotation(t, s, "r1"); rot.jobLatency != st.want {
				t.Fatalf("rotation's job latency = %v, want %v", rot.jobLatency, st.want)
			}
		}
		// A rotation whose records expired is not brought back as a stub.
		if got, err := s.ObserveJobLatency(ctx, "gone", time.Second); err != nil || got != 0 {
			t.Fatalf("ObserveJobLatency of a missing rotation = %v, %v; want 0, nil", got, err)
		}
		if n := r.Client(t).Exists(ctx, s.metaKey("gone")).Val(); n != 0 {
			t.Fatal("ObserveJobLatency created the record of a missing rotation")
		}
	})
}

func TestFirstPoll(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name              string
		floor, cap, learn time.Duration
		ripe, first       time.Duration
	}{
		{"nothing learned: the floor, never early", 2 * s, 30 * s, 0, 2 * s, 2 * s},
		{"learned above the floor: a fifth more", 2 * s, 30 * s, 2 * s, 2 * s, 2400 * time.Millisecond},
		{"slow jobs", 2 * s, 30 * s, 10 * s, 10 * s, 12 * s},
		{"fast jobs: the floor", 2 * s, 30 * s, 500 * time.Millisecond, 2 * s, 2 * s},
		{"just under the floor", 2 * s, 30 * s, 1900 * time.Millisecond, 2 * s, 2280 * time.Millisecond},
		{"capped", 2 * s, 30 * s, 40 * s, 30 * s, 30 * s},
		{"a lower floor", 500 * time.Millisecond, 30 * s, s, s, 1200 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHandler(HandlerOptions{Config: Config{FirstPoll: tt.floor, PollCap: tt.cap}})
			ripe, first := h.firstPoll(&Rotation{jobLatency: tt.learn})
			if ripe != tt.ripe || first != tt.first {
				t.Fatalf("firstPoll with %v learned = %v, %v; want ripe %v, first %v", tt.learn, ripe, first, tt.ripe, tt.first)
			}
			// Later polls grow from the first one to the cap, ±20 %.
			rot := &Rotation{jobLatency: tt.learn}
			for _, c := range []struct {
				round int
				want  time.Duration
			}{{1, tt.first}, {20, tt.cap}} {
				if d := h.pollDelay(rot, c.round); d < c.want*4/5 || d > c.want*6/5 {
					t.Fatalf("pollDelay(round %d) = %v, want %v ±20 %%", c.round, d, c.want)
				}
			}
		})
	}
}

func TestLongestJob(t *testing.T) {
	job := func(st cph.JobStatus, begin, end string) cph.Job {
		return cph.Job{Status: st, BeginTime: begin, EndTime: end}
	}
	const t0 = "2026-12-01T10:00:00Z"
	tests := []struct {
		name string
		jobs []cph.Job
		want time.Duration
		ok   bool
	}{
		{"none", nil, 0, false},
		{"running only", []cph.Job{job(cph.JobRunning, t0, "")}, 0, false},
		{"the longest ended", []cph.Job{
			job(cph.JobSucceeded, t0, "2026-12-01T10:00:02Z"),
			job(cph.JobFailed, t0, "2026-12-01T10:00:03Z"),
			job(cph.JobRunning, "2026-12-01T09:00:00Z", ""),
		}, 3 * time.Second, true},
		{"unreadable times skipped", []cph.Job{
			job(cph.JobSucceeded, "", "2026-12-01T10:00:09Z"),
			job(cph.JobSucceeded, t0, "yesterday"),
			job(cph.JobSucceeded, "2026-12-01T10:00:05Z", t0),
			job(cph.JobSucceeded, t0, "2026-12-01T10:00:01Z"),
		}, time.Second, true},
		{"ended within its second", []cph.Job{job(cph.JobSucceeded, t0, t0)}, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, ok := longestJob(tt.jobs); got != tt.want || ok != tt.ok {
				t.Fatalf("longestJob = %v, %v; want %v, %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestStoreDuePollsSoon(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		chunks := [][]Entry{entries("a"), entries("b"), entries("c")}
		if _, err := s.Create(ctx, testRotation("r1", chunks), chunks, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
		now := time.UnixMilli(time.Now().UnixMilli())
		for n, at := range map[int]time.Duration{1: -time.Second, 2: 300 * time.Millisecond, 3: 2 * time.Second} {
			id := chunks[n-1][0].ServerID
			if _, err := s.Checkpoint(ctx, "r1", n, 1, "req", map[string]string{id: "job-" + id}, nil, now, now.Add(at)); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			ahead     time.Duration
			limit     int
			due, soon []int
			next      time.Duration
		}{
			{0, 10, []int{1}, nil, 300 * time.Millisecond},
			{500 * time.Millisecond, 10, []int{1}, []int{2}, 300 * time.Millisecond},
			{5 * time.Second, 10, []int{1}, []int{2, 3}, 300 * time.Millisecond},
			{5 * time.Second, 2, []int{1}, []int{2}, 300 * time.Millisecond},
			{5 * time.Second, 1, []int{1}, nil, 300 * time.Millisecond},
		}
		for _, tt := range tests {
			due, soon, next, err := s.DuePolls(ctx, "r1", now, now.Add(tt.ahead), tt.limit)
			if err != nil || !slices.Equal(due, tt.due) || !slices.Equal(soon, tt.soon) || !next.Equal(now.Add(tt.next)) {
				t.Fatalf("DuePolls(ahead %v, limit %d) = %v, %v, %v, %v; want %v, %v, %v", tt.ahead, tt.limit, due, soon, next.Sub(now), err, tt.due, tt.soon, tt.next)
			}
		}
	})
}

// endedJobs answers ListJobs with every job of its batch ended 2 s after
// it began, and counts the calls.
type endedJobs struct {
	failOnceAPI
	jobs  []cph.Job
	calls atomic.Int32
}

func (a *endedJobs) ListJobsOf(context.Context, int, ...string) ([]cph.Job, error) {
	a.calls.Add(1)
	return a.jobs, nil
}

// tokens grants a ListJobs token, or answers that none comes soon.
type tokens bool

func (t tokens) Wait(context.Context, string) error {
	if t {
		return nil
	}
	return &ratelimit.DelayError{RetryIn: time.Second}
}

func (tokens) Throttled(context.Context, string, time.Duration, float64) error { return nil }
func (tokens) Rate(string) float64                                             { return 20 }

func TestPollEarly(t *testing.T) {
	const s = time.Second
	tests := []struct {
		name      string
		learned   time.Duration // the rotation's job latency (0: none seen)
		submitted time.Duration // before now
		room      tokens
		polled    bool
		next      time.Duration // the round's next tick, after now
	}{
		{"ripe, the quota has room: polled early", 2 * s, 2100 * time.Millisecond, true, true, 0},
		{"ripe, no room: polled when due", 2 * s, 2100 * time.Millisecond, false, false, 300 * time.Millisecond},
		{"not ripe yet: comes back when it is", 2 * s, 1900 * time.Millisecond, true, false, 100 * time.Millisecond},
		{"nothing learned: never early", 0, 2100 * time.Millisecond, true, false, 300 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			store := NewStore(testredis.Mini(t).Client(t), "")
			chunks := [][]Entry{entries("a")}
			if _, err := store.Create(ctx, testRotation("r1", chunks), chunks, nil, time.Now()); err != nil {
				t.Fatal(err)
			}
			if tt.learned > 0 {
				if _, err := store.ObserveJobLatency(ctx, "r1", tt.learned); err != nil {
					t.Fatal(err)
				}
			}
			now := time.UnixMilli(time.Now().UnixMilli())
			at := now.Add(-tt.submitted)
			// Due 300 ms from now: within the margin of a learned 2 s (0.4 s).
			if _, err := store.Checkpoint(ctx, "r1", 1, 1, "req", map[string]string{"a": "job-a"}, nil, at, now.Add(300*time.Millisecond)); err != nil {
				t.Fatal(err)
			}
			api := &endedJobs{jobs: []cph.Job{{JobID: "job-a", Status: cph.JobSucceeded, BeginTime: "2026-12-01T10:00:00Z", EndTime: "2026-12-01T10:00:02Z"}}}
			h := NewHandler(HandlerOptions{Store: store, API: api, Limiter: tt.room, Config: Config{FirstPoll: s}})
			rot := mustRotation(t, store, "r1")
			r := &round{now: now}
			if err := h.poll(ctx, h.log, rot, r, nil); err != nil {
				t.Fatal(err)
			}
			if polled := api.calls.Load() == 1; polled != tt.polled {
				t.Fatalf("polled = %v, want %v", polled, tt.polled)
			}
			b, err := store.Batch(ctx, "r1", 1)
			if err != nil {
				t.Fatal(err)
			}
			if b.Done != tt.polled {
				t.Fatalf("batch done = %v, want %v", b.Done, tt.polled)
			}
			if !tt.polled && !r.next.Equal(now.Add(tt.next)) {
				t.Fatalf("next round at %v from now, want %v", r.next.Sub(now), tt.next)
			}
		})
	}
}

// failingJobs answers every ListJobs call with a gateway's 503.
type failingJobs struct {
	failOnceAPI
	calls atomic.Int32
}

func (a *failingJobs) ListJobsOf(context.Context, int, ...string) ([]cph.Job, error) {
	a.calls.Add(1)
	return nil, &cph.Error{StatusCode: http.StatusServiceUnavailable, Kind: cph.KindTransient, Message: "service unavailable"}
}

// TestFailedPollComesBackSoon checks that a ListJobs call that failed for
// a transient reason is tried again within a backoff base, not a whole
// poll delay later (the jobs may have ended: that delay would be the
// rotation's tail), and that the backoff grows while the API keeps failing.
func TestFailedPollComesBackSoon(t *testing.T) {
	ctx := context.Background()
	store := NewStore(testredis.Mini(t).Client(t), "")
	chunks := [][]Entry{entries("a")}
	if _, err := store.Create(ctx, testRotation("r1", chunks), chunks, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	now := time.UnixMilli(time.Now().UnixMilli())
	if _, err := store.Checkpoint(ctx, "r1", 1, 1, "req", map[string]string{"a": "job-a"}, nil, now.Add(-3*time.Second), now); err != nil {
		t.Fatal(err)
	}
	api := &failingJobs{}
	cfg := Config{FirstPoll: 5 * time.Second, RetryBase: time.Second}
	h := NewHandler(HandlerOptions{Store: store, API: api, Limiter: tokens(true), Config: cfg})
	var longest time.Duration
	for n := 1; n <= 8; n++ {
		rot := mustRotation(t, store, "r1")
		r := &round{now: now}
		if err := h.poll(ctx, h.log, rot, r, nil); err != nil {
			t.Fatal(err)
		}
		if got := api.calls.Load(); got != int32(n) {
			t.Fatalf("round %d: %d ListJobs calls, want %d", n, got, n)
		}
		_, _, next, err := store.DuePolls(ctx, "r1", now, now, pollLimit)
		if err != nil {
			t.Fatal(err)
		}
		wait := next.Sub(now)
		if limit := 100*time.Millisecond + cfg.RetryBase<<(n-1); wait <= 0 || wait > limit {
			t.Fatalf("round %d: polled again in %v, want (0, %v]", n, wait, limit)
		}
		longest = max(longest, wait)
		now = next
	}
	if longest <= cfg.RetryBase {
		t.Fatalf("the backoff never grew past %v while ListJobs kept failing", longest)
	}
}

// heldTokens answers every ListJobs token with "come back in 5 s", as a
// limiter whose window is full does, and counts the asks.
type heldTokens struct{ asks atomic.Int32 }

const heldFor = 5 * time.Second

func (l *heldTokens) Wait(context.Context, string) error {
	l.asks.Add(1)
	return &ratelimit.DelayError{RetryIn: heldFor}
}

func (*heldTokens) Throttled(context.Context, string, time.Duration, float64) error { return nil }
func (*heldTokens) Rate(string) float64                                             { return 20 }

// TestHeldPollsWaitForTheToken: with more batches due than a tick polls
// and the limiter holding ListJobs back, the tick's poll loop reads the
// due batches once and hands back, due when the token comes, instead of
// reading them all again every 50 ms until its budget ends.
func TestHeldPollsWaitForTheToken(t *testing.T) {
	ctx := context.Background()
	r := testredis.Mini(t)
	store := NewStore(r.Client(t), "")
	const batches = pollLimit + 50
	chunks := make([][]Entry, batches)
	for i := range chunks {
		chunks[i] = entries(fmt.Sprintf("s%03d", i))
	}
	if _, err := store.Create(ctx, testRotation("r1", chunks), chunks, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for n := 1; n <= batches; n++ {
		id := fmt.Sprintf("s%03d", n-1)
		if _, err := store.Checkpoint(ctx, "r1", n, 1, fmt.Sprintf("req-%d", n), map[string]string{id: "job-" + id}, nil, now.Add(-time.Minute), now.Add(-time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	lim := &heldTokens{}
	api := &endedJobs{}
	h := NewHandler(HandlerOptions{Store: store, API: api, Limiter: lim, Config: Config{FirstPoll: time.Second, PollCap: 2 * time.Second}})
	before := r.Mini.CommandCount()
	// A budget long enough for a hundred looks 50 ms apart: the loop must
	// not take them.
	next, _, _, err := h.loop(ctx, "r1", time.Now().Add(5*time.Second), nil, nil, func(rot *Rotation, r *round) error {
		return h.poll(ctx, h.log, rot, r, nil)
	})
	if err != nil {
		t.Fatal(err)
	}
	cmds := r.Mini.CommandCount() - before
	if api.calls.Load() != 0 {
		t.Fatalf("%d ListJobs calls without a token", api.calls.Load())
	}
	if lim.asks.Load() == 0 {
		t.Fatal("the limiter was never asked: the test proves nothing")
	}
	// One look reads the due set and pollLimit batch hashes, and the
	// rotation record: a second look would double it.
	if cmds > pollLimit+50 {
		t.Fatalf("%d Redis commands while ListJobs was held back: the due batches were read more than once", cmds)
	}
	if wait := next.Sub(now); wait < heldFor {
		t.Fatalf("next look %s after the start, before the limiter's token (%s)", wait.Round(time.Millisecond), heldFor)
	}
}
