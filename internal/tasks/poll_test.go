package tasks

import (
	"context"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
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
