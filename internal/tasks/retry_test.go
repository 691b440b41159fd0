package tasks

import (
	"testing"
	"time"
)

func TestFormRetry(t *testing.T) {
	const linger, patience = 10 * time.Second, time.Second
	tests := []struct {
		name          string
		p             retryPool
		form, partial bool
	}{
		{"nothing due", retryPool{Pool: Pool{Size: 40}, chunk: 100}, false, false},
		{"a full batch", retryPool{Pool: Pool{Size: 150, Due: 120}, chunk: 100, polling: 9, queued: 5000, joinable: 200}, true, false},
		{"exactly full", retryPool{Pool: Pool{Size: 100, Due: 100}, chunk: 100, queued: 5000}, true, false},
		{"first attempts wait: the quota is the bound", retryPool{Pool: Pool{Size: 30, Due: 30}, chunk: 100, polling: 9, queued: 5000, waited: 5 * time.Second}, false, false},
		{"first attempts wait, but lingered", retryPool{Pool: Pool{Size: 30, Due: 30}, chunk: 100, polling: 9, queued: 5000, waited: linger}, true, true},
		{"settled: nothing can join", retryPool{Pool: Pool{Size: 30, Due: 30}, chunk: 100, queued: 5000}, true, true},
		{"a retry batch waits for its submit", retryPool{Pool: Pool{Size: 60, Due: 60}, chunk: 100, polling: 3, queued: 100, waited: 5 * time.Second}, false, false},
		{"idle, the running jobs fill a batch: waits for them", retryPool{Pool: Pool{Size: 60, Due: 60}, chunk: 100, polling: 20, joinable: 50, waited: patience / 2}, false, false},
		{"idle, the pool fills a batch: waits for it", retryPool{Pool: Pool{Size: 110, Due: 60}, chunk: 100, polling: 3, waited: patience / 2}, false, false},
		{"idle, a batch would fill, but waited its patience", retryPool{Pool: Pool{Size: 110, Due: 60}, chunk: 100, polling: 20, joinable: 50, waited: patience}, true, true},
		{"idle, nothing more expected", retryPool{Pool: Pool{Size: 60, Due: 60}, chunk: 100, polling: 1, joinable: 0.5}, true, true},
		{"idle, a failure expected: waits for it", retryPool{Pool: Pool{Size: 60, Due: 60}, chunk: 100, polling: 3, joinable: 15, waited: patience / 2}, false, false},
		{"idle, servers in backoff: waits for them", retryPool{Pool: Pool{Size: 70, Due: 60}, chunk: 100, polling: 3, waited: patience / 2}, false, false},
		{"idle, waited its patience", retryPool{Pool: Pool{Size: 70, Due: 60}, chunk: 100, polling: 3, joinable: 15, waited: patience}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.p.linger, tt.p.patience = linger, patience
			if form, partial := formRetry(tt.p); form != tt.form || partial != tt.partial {
				t.Fatalf("formRetry(%+v) = %v, %v; want %v, %v", tt.p, form, partial, tt.form, tt.partial)
			}
		})
	}
}

func TestQueuedFirst(t *testing.T) {
	waves := []Wave{{LastChunk: 2, Servers: 200}, {LastChunk: 5, Servers: 300}}
	tests := []struct {
		name    string
		wave    int
		pending int64
		pool    int
		want    int
	}{
		{"first wave submitting", 1, 500, 10, 190},
		{"first wave submitted: the next one waits for it", 1, 310, 10, 0},
		{"last wave", 2, 250, 50, 200},
		{"cancelled servers taken off", 2, 20, 30, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rot := &Rotation{Waves: waves, Wave: tt.wave, Counts: Counts{Pending: tt.pending}}
			if got := queuedFirst(rot, Pool{Size: tt.pool}); got != tt.want {
				t.Fatalf("queuedFirst = %d, want %d", got, tt.want)
			}
		})
	}
}

func TestJoinable(t *testing.T) {
	tests := []struct {
		name string
		c    Counts
		want float64
	}{
		{"nothing ended yet", Counts{Submitted: 1000, Running: 1000}, 0},
		{"nothing running", Counts{Submitted: 1000, Retried: 50}, 0},
		{"5 % of the ended failed", Counts{Submitted: 1000, Running: 400, Verifying: 200, Retried: 40}, 10},
		{"only verification left", Counts{Submitted: 1000, Running: 100, Verifying: 100, Retried: 50}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := joinable(tt.c); got != tt.want {
				t.Fatalf("joinable(%+v) = %v, want %v", tt.c, got, tt.want)
			}
		})
	}
}
