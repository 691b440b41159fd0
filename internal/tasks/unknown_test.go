package tasks

import (
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// TestPoisonedRequestIDDoesNotStopOthers: ListJobs rejecting one request
// id (400) fails the call for every batch polled with it; those are polled
// alone and recorded, and the poisoned batch's jobs, whose outcome cannot
// be learned, are read back instead of submitted again.
func TestPoisonedRequestIDDoesNotStopOthers(t *testing.T) {
	e := newGated(t, 20)
	e.gate.mu.Lock()
	e.gate.poisonOn = true
	e.gate.mu.Unlock()
	id, ids := e.start(t, 5)
	rot := e.until(t, id, 20*time.Second, "finished", func(r *Rotation) bool { return r.Finished() })
	if rot.State != StateSucceeded || rot.Counts.Succeeded != 20 || rot.Counts.Failed != 0 {
		t.Fatalf("state %s, counts %+v; want every server succeeded", rot.State, rot.Counts)
	}
	e.submittedOnce(t, ids)
	e.gate.mu.Lock()
	poison := e.gate.poison
	e.gate.mu.Unlock()
	var shared, others, alone int
	for _, c := range e.gate.listJobsCalls() {
		switch {
		case strings.Contains(c, poison) && strings.Contains(c, ","):
			shared++
		case c == poison:
			alone++
		case !strings.Contains(c, ","):
			others++
		}
	}
	if shared == 0 {
		t.Fatalf("the poisoned request id was never polled with others (calls %v): the test proves nothing", e.gate.listJobsCalls())
	}
	if alone != pollRejectLimit || others == 0 {
		t.Fatalf("poisoned id polled alone %d times (want %d), other batches alone %d times (want some)", alone, pollRejectLimit, others)
	}
}

// TestTimedOutJobIsUnknown: a job still running after the job timeout is
// read back, not failed.
func TestTimedOutJobIsUnknown(t *testing.T) {
	h := NewHandler(HandlerOptions{Config: Config{JobTimeout: time.Minute}})
	now := time.Now()
	b := &Batch{N: 1, Servers: entries("a", "b"), SubmittedAt: now.Add(-2 * time.Minute),
		Jobs: map[string]string{"a": "ja", "b": "jb"}, Ended: map[string]bool{}, Resolved: map[string]bool{}}
	rot := &Rotation{MaxAttempts: 3, Verify: false, State: StateRunning}
	rs := h.resolveJobs(rot, b, []cph.Job{{JobID: "ja", Status: cph.JobRunning}}, false, now)
	if len(rs) != 2 {
		t.Fatalf("%d resolutions, want 2", len(rs))
	}
	for _, r := range rs {
		if !r.Verify || !r.Unknown || r.Retry != nil || r.Outcome != "" {
			t.Errorf("%s: %+v; want an unknown outcome to read back", r.ServerID, r)
		}
	}
}
