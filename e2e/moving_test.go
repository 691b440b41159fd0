package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// TestChurnDuringRotation: servers are created on top of the list and
// deleted from it while two worker processes rotate it, with job failures,
// 5xx answers and every answer taking 100–500 ms. Every target ends once in the report, nothing is
// misreported: a succeeded server is on the new keypair, a deleted target
// says so, and verification follows the shifted pages instead of reading
// one server a call.
func TestChurnDuringRotation(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{
		Servers: 2000, Seed: 21,
		JobLatency: 400 * time.Millisecond, JobJitter: 300 * time.Millisecond,
		Error5xxRate: 0.01, JobFailRate: 0.05,
		Latency: 300 * time.Millisecond, LatencyJitter: 200 * time.Millisecond,
	})
	env := baseEnv(r, f)
	targets := f.sim.Servers()
	st := startRotation(t, env, writeTargets(t, f))
	// Churn starts with the workers: 20 servers created and 4 deleted a
	// second, many times what a real project sees, so every page moves
	// between its plan and its read.
	if err := f.sim.SetChurn(20, 4); err != nil {
		t.Fatal(err)
	}
	startWorker(t, env)
	startWorker(t, env)
	rot := waitFinished(t, r.Client(t), st.Rotation, 3*time.Minute)
	if err := f.sim.SetChurn(0, 0); err != nil {
		t.Fatal(err)
	}
	rows := report(t, env, st.Rotation)
	if len(rows) != len(targets) {
		t.Fatalf("report has %d rows, want %d", len(rows), len(targets))
	}
	seen := map[string]bool{}
	deleted := 0
	for _, row := range rows {
		if seen[row.ServerID] {
			t.Errorf("server %s appears twice in the report", row.ServerID)
		}
		seen[row.ServerID] = true
		kp, _ := f.sim.Keypair(row.ServerID)
		gone := f.sim.Deleted(row.ServerID)
		if gone {
			deleted++
		}
		switch {
		case row.Outcome == tasks.OutcomeSucceeded && kp != newKeypair:
			t.Errorf("server %s reported succeeded but the simulator has it on %q", row.ServerID, kp)
		case row.Outcome == tasks.OutcomeSkipped && (row.ErrorCode != tasks.CodeServerDeleted || !gone):
			t.Errorf("server %s skipped with %q (deleted: %v), want skipped only when deleted, with %s", row.ServerID, row.ErrorCode, gone, tasks.CodeServerDeleted)
		case row.Outcome == tasks.OutcomeFailed && !gone && row.ErrorCode != cphsim.JobCodeTransient:
			t.Errorf("server %s, not deleted, failed with %s %s", row.ServerID, row.ErrorCode, row.ErrorMsg)
		case row.Outcome == tasks.OutcomeFailed && gone && row.ErrorCode != "CPS.0016" && row.ErrorCode != cphsim.JobCodeServerDeleted:
			t.Errorf("deleted server %s failed with %s %s, want the API's answer for a deleted server", row.ServerID, row.ErrorCode, row.ErrorMsg)
		case row.Outcome != tasks.OutcomeSucceeded && row.Outcome != tasks.OutcomeSkipped && row.Outcome != tasks.OutcomeFailed:
			t.Errorf("server %s is %s after the rotation finished", row.ServerID, row.Outcome)
		}
		if strings.HasPrefix(row.ErrorCode, "REKEY.VERIFY") {
			t.Errorf("server %s: %s %s: verification lost track of it", row.ServerID, row.ErrorCode, row.ErrorMsg)
		}
	}
	s := f.sim.Stats()
	pages := len(targets) / 100
	t.Logf("rotation %+v; %d created, %d deleted (%d targets); verification: %d page reads (plan's included), %d ShowServer",
		rot.Counts, s.ServersCreated, s.ServersDeleted, deleted, s.Calls[cphsim.APIListServers], s.Calls[cphsim.APIShowServer])
	if s.ServersCreated == 0 || deleted == 0 {
		t.Fatalf("%d servers created, %d targets deleted: the test did not move the list", s.ServersCreated, deleted)
	}
	if shows := s.Calls[cphsim.APIShowServer]; shows > deleted+pages {
		t.Errorf("%d ShowServer calls for %d deleted targets: verification read servers one by one instead of following the pages", shows, deleted)
	}
}

// TestVerificationBacklogNeverFails: the read quota lets one page through
// a second and the job timeout is 3 s, so servers wait for their
// read-back far longer than the job timeout. Waiting is not failing: every
// server whose keypair changed ends succeeded.
func TestVerificationBacklogNeverFails(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 600, Seed: 5, JobLatency: 200 * time.Millisecond, ReadQuota: 1})
	env := baseEnv(r, f)
	st := startRotation(t, env, "--read-rate", "600/m:20", writeTargets(t, f))
	startWorker(t, env, "--job-timeout", "3s", "--read-rate", "10/s")
	rot := waitFinished(t, r.Client(t), st.Rotation, 3*time.Minute)
	checkReport(t, f, report(t, env, st.Rotation), rot)
	if rot.Counts.Succeeded != 600 {
		t.Fatalf("counts %+v: want all 600 succeeded", rot.Counts)
	}
	if d := rot.FinishedAt.Sub(rot.CreatedAt); d < 3*time.Second {
		t.Fatalf("the rotation took %s, not longer than the job timeout: the test did not make a backlog", d)
	}
}

// TestPageReadBeforeItsRetriesEnd: with 30 % of jobs failing, every page
// holds servers being retried. A page is read as soon as its first
// attempts have ended, so servers succeed before any retry is even
// submitted; the retried ones are read when their retries end.
func TestPageReadBeforeItsRetriesEnd(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 200, Seed: 7, JobLatency: time.Second, JobFailRate: 0.3})
	env := baseEnv(r, f)
	st := startRotation(t, env, writeTargets(t, f))
	startWorker(t, env)
	rdb := r.Client(t)
	firsts := st.Chunks // first attempts: one UpdateKeypair call a chunk
	deadline := time.Now().Add(time.Minute)
	for {
		// The rotation first, the calls after: calls only grow, so none
		// beyond the first attempts now means none when the rotation was
		// read.
		rot := readRotation(t, rdb, st.Rotation)
		calls := f.sim.Stats().Calls[cphsim.APIUpdateKeypair]
		if rot.Counts.Succeeded > 0 && calls <= firsts {
			t.Logf("%d servers succeeded, %d retried, before the first retry was submitted", rot.Counts.Succeeded, rot.Counts.Retried)
			break
		}
		if calls > firsts {
			t.Fatalf("a retry was submitted (%d UpdateKeypair calls, %d chunks) before any server succeeded (%+v): pages waited for their retried servers",
				calls, firsts, rot.Counts)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no server succeeded within a minute: %+v", rot.Counts)
		}
		time.Sleep(20 * time.Millisecond)
	}
	rot := waitFinished(t, rdb, st.Rotation, 2*time.Minute)
	checkReport(t, f, report(t, env, st.Rotation), rot)
	if rot.Counts.Retried == 0 {
		t.Fatalf("counts %+v: no server was retried", rot.Counts)
	}
}

// TestListJobsDeniedHaltsUntilResumed: the credentials' IAM policy lacks
// ListJobs. The first poll halts the rotation (state failed) with a reason
// naming the API and the action it needs, nothing is recorded failed and no
// server is submitted twice; once the policy is fixed, resume finishes it.
func TestListJobsDeniedHaltsUntilResumed(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 300, Seed: 9, JobLatency: 200 * time.Millisecond, Deny: []cphsim.API{cphsim.APIListJobs}})
	env := baseEnv(r, f)
	st := startRotation(t, env, writeTargets(t, f))
	startWorker(t, env)
	startWorker(t, env)
	rdb := r.Client(t)
	deadline := time.Now().Add(time.Minute)
	var rot *tasks.Rotation
	for {
		rot = readRotation(t, rdb, st.Rotation)
		if rot.State == tasks.StateFailed {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation %+v not halted a minute after ListJobs was denied", rot)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(rot.Reason, "ListJobs answered 403") || !strings.Contains(rot.Reason, "cph:jobs:list") {
		t.Fatalf("halted with reason %q, want it to name ListJobs, the 403 and cph:jobs:list", rot.Reason)
	}
	time.Sleep(2 * time.Second) // what the workers would do next, they do now
	if rot = readRotation(t, rdb, st.Rotation); rot.Counts.Failed != 0 || rot.State != tasks.StateFailed {
		t.Fatalf("counts %+v, state %s while halted: want nothing failed, still halted", rot.Counts, rot.State)
	}
	denied, reason := f.sim.Stats().Forbidden, rot.Reason
	if err := f.sim.SetDeny(cphsim.APIListJobs, false); err != nil {
		t.Fatal(err)
	}
	enqueue(t, env, "resume", st.Rotation)
	rot = waitFinished(t, rdb, st.Rotation, 2*time.Minute)
	if rot.State != tasks.StateSucceeded || rot.Counts.Succeeded != 300 {
		t.Fatalf("after resume: %s %+v, want all 300 succeeded", rot.State, rot.Counts)
	}
	checkReport(t, f, report(t, env, st.Rotation), rot)
	for _, s := range f.sim.Servers() {
		if n := f.sim.SubmitCount(s.ServerID); n != 1 {
			t.Errorf("server %s submitted %d times, want once", s.ServerID, n)
		}
	}
	t.Logf("halted with %q after %d refused calls", reason, denied)
}
