package e2e

import (
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// TestWaveWaitsForVerificationAndReadsNeverRepoll: with verification slow
// (the read quota is one call every 2 s, and the workers' read rate far
// above it, so reads are throttled), wave 2 is not submitted while any
// server of wave 1 still waits for its keypair to be read back, and no
// batch's jobs are listed again because a read had to wait: one ListJobs
// call per batch (or fewer, when small batches share one).
func TestWaveWaitsForVerificationAndReadsNeverRepoll(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 300, Seed: 11, JobLatency: 300 * time.Millisecond, ReadQuota: 0.5})
	env := baseEnv(r, f)
	// Wave 1 is every third server, so its verification reads three pages
	// at the slow read quota: seconds in which wave 2 must wait.
	var wave1, wave2 []string
	for i, s := range f.sim.Servers() {
		if i%3 == 0 {
			wave1 = append(wave1, s.ServerID)
		} else {
			wave2 = append(wave2, s.ServerID)
		}
	}
	st := startRotation(t, env, "--waves", "100,100%", "--read-rate", "30/m:1", writeList(t, append(wave1, wave2...)))
	planned := f.sim.Stats().Calls[cphsim.APIListServers]
	startWorker(t, env, "--read-rate", "50/s")
	rdb := r.Client(t)
	sawVerifying := false
	deadline := time.Now().Add(2 * time.Minute)
	for {
		// Submissions first: the wave advances before wave 2 is enqueued,
		// so a wave-2 submission seen here is seen with wave 2 below.
		submitted := ""
		for _, id := range wave2 {
			if f.sim.SubmitCount(id) > 0 {
				submitted = id
				break
			}
		}
		rot := readRotation(t, rdb, st.Rotation)
		if rot.Finished() {
			break
		}
		if rot.Wave == 1 && submitted != "" {
			t.Fatalf("server %s of wave 2 submitted while wave 1 is not finished: %+v", submitted, rot.Counts)
		}
		sawVerifying = sawVerifying || rot.Wave == 1 && rot.Counts.Verifying > 0 && rot.Counts.Pending == 200
		if time.Now().After(deadline) {
			t.Fatalf("rotation not finished after 2 minutes: %+v", rot.Counts)
		}
		time.Sleep(50 * time.Millisecond)
	}
	rot := waitFinished(t, rdb, st.Rotation, time.Second)
	checkReport(t, f, report(t, env, st.Rotation), rot)
	if !sawVerifying {
		t.Fatal("never saw wave 1 waiting for verification: the test did not exercise the wait")
	}
	s := f.sim.Stats()
	if s.Throttled[cphsim.APIListServers]+s.Throttled[cphsim.APIShowServer] == 0 {
		t.Fatal("no verification read was throttled: the test did not make reads wait")
	}
	if polls := s.Calls[cphsim.APIListJobs]; polls > rot.Batches {
		t.Fatalf("%d ListJobs calls for %d batches: a read that had to wait listed jobs again", polls, rot.Batches)
	}
	t.Logf("%d batches, %d ListJobs calls; verification: %d page reads (%d throttled), %d ShowServer (plan: %d pages)",
		rot.Batches, s.Calls[cphsim.APIListJobs], s.Calls[cphsim.APIListServers]-planned, s.Throttled[cphsim.APIListServers],
		s.Calls[cphsim.APIShowServer], planned)
}
