package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// The rotation controls of docs/controls.md, each against the simulator
// with real worker processes.

func readRotation(t *testing.T, rdb redis.UniversalClient, id string) *tasks.Rotation {
	t.Helper()
	rot, err := tasks.NewStore(rdb, "").Rotation(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return rot
}

// waitRotation polls the rotation until cond holds.
func waitRotation(t *testing.T, rdb redis.UniversalClient, id, what string, timeout time.Duration, cond func(*tasks.Rotation) bool) *tasks.Rotation {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		rot := readRotation(t, rdb, id)
		if cond(rot) {
			return rot
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation %s: not %s after %s: %s %+v", id, what, timeout, rot.State, rot.Counts)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func writeList(t *testing.T, lines []string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "targets")
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func updateCalls(f *fleet) int { return f.sim.Stats().Calls[cphsim.APIUpdateKeypair] }

// TestDryRunOnlyReads: a dry run reads the fleet through ListServers pages,
// prints the diff and an ETA, calls no write API and writes nothing to Redis.
func TestDryRunOnlyReads(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 300, Seed: 5, BadServerRate: 0.05, BadServerKind: cphsim.BadAbnormal})
	env := baseEnv(r, f)
	servers := f.sim.Servers()
	lines := []string{"server_id,keypair_name"}
	for i, s := range servers {
		kp := newKeypair
		if i < 10 {
			kp = "kp-old" // already on its target
		}
		lines = append(lines, s.ServerID+","+kp)
	}
	missing := []string{"ffffffffffffffffffffffffffff0001", "ffffffffffffffffffffffffffff0002"}
	for _, id := range missing {
		lines = append(lines, id+",")
	}
	file := writeList(t, lines)
	abnormal := 0
	for _, b := range f.sim.BadServers() {
		for _, s := range servers[10:] {
			if s.ServerID == b.ServerID {
				abnormal++
			}
		}
	}

	var got struct {
		DryRun          bool    `json:"dry_run"`
		ToChange        int     `json:"to_change"`
		AlreadyOnTarget int     `json:"already_on_target"`
		NotFound        int     `json:"not_found"`
		Abnormal        int     `json:"abnormal"`
		Chunks          int     `json:"chunks"`
		Waves           []int   `json:"waves"`
		ETASeconds      float64 `json:"eta_seconds"`
		Lists           struct {
			NotFound []string `json:"not_found"`
		} `json:"lists"`
	}
	out := enqueue(t, env, "start", "--dry-run", "--json", "--keypair", newKeypair, "--waves", "1,10%",
		"--submit-rate", "5/s", "--job-latency", "10s", file)
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("dry run output %q: %v", out, err)
	}
	wantChange := 300 - 10 - abnormal
	if !got.DryRun || got.ToChange != wantChange || got.AlreadyOnTarget != 10 || got.NotFound != 2 || got.Abnormal != abnormal {
		t.Fatalf("dry run = %+v; want %d to change, 10 on target, 2 not found, %d abnormal", got, wantChange, abnormal)
	}
	if fmt.Sprint(got.Lists.NotFound) != fmt.Sprint(missing) {
		t.Fatalf("not found list %v, want %v", got.Lists.NotFound, missing)
	}
	// 292 servers to submit: waves of 1, 30 and 261 servers, 1+1+3 chunks
	// of 100; 5 chunks at 5/s plus 3 waves of 10 s.
	if fmt.Sprint(got.Waves) != "[1 30 261]" || got.Chunks != 5 || got.ETASeconds != 31 {
		t.Fatalf("waves %v, %d chunks, ETA %vs; want [1 30 261], 5, 31s", got.Waves, got.Chunks, got.ETASeconds)
	}
	text := enqueue(t, env, "start", "--dry-run", "--keypair", newKeypair, file)
	for _, want := range []string{"nothing written", "already on target", "not found", "ETA"} {
		if !strings.Contains(text, want) {
			t.Errorf("dry run text does not say %q:\n%s", want, text)
		}
	}
	stats := f.sim.Stats()
	if stats.Writes() != 0 || stats.Calls[cphsim.APIListServers] == 0 {
		t.Fatalf("simulator calls %v: want ListServers only", stats.Calls)
	}
	if n := r.Client(t).DBSize(context.Background()).Val(); n != 0 {
		t.Fatalf("Redis holds %d keys after dry runs", n)
	}
}

// TestCanaryWaveStopsRotation: the first wave holds three bad servers, one
// more than the budget; the rotation halts before the second wave starts,
// and resume with a larger budget finishes it.
func TestCanaryWaveStopsRotation(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 200, Seed: 9, JobLatency: 300 * time.Millisecond, BadServerRate: 0.05})
	env := baseEnv(r, f)
	bad := map[string]bool{}
	var lines []string
	for _, b := range f.sim.BadServers()[:3] {
		bad[b.ServerID] = true
		lines = append(lines, b.ServerID)
	}
	for _, s := range f.sim.Servers() {
		if !bad[s.ServerID] {
			lines = append(lines, s.ServerID)
		}
	}
	st := startRotation(t, env, "--waves", "5,100%", "--chunk-size", "5", "--max-errors", "2", writeList(t, lines))
	if st.Enqueued != 1 {
		t.Fatalf("start enqueued %d chunks, want wave 1's one chunk", st.Enqueued)
	}
	startWorker(t, env)
	rdb := r.Client(t)
	rot := waitRotation(t, rdb, st.Rotation, "halted", time.Minute, func(r *tasks.Rotation) bool { return r.Halted() && r.Counts.Running == 0 })
	if !strings.Contains(rot.Reason, "3 failed > max 2") || rot.Wave != 1 || rot.Counts.Pending != 195 {
		t.Fatalf("halted rotation: wave %d, reason %q, %+v; want wave 1, 3 failed > max 2, 195 pending", rot.Wave, rot.Reason, rot.Counts)
	}
	for _, id := range lines[5:] {
		if n := f.sim.SubmitCount(id); n != 0 {
			t.Fatalf("server %s of wave 2 was submitted %d times", id, n)
		}
	}
	if _, code, _ := enqueueCode(t, env, "status", "--wait", st.Rotation); code != 4 {
		t.Fatalf("status --wait on a halted rotation exited %d, want 4 (failed)", code)
	}
	if _, code, stderr := enqueueCode(t, env, "resume", st.Rotation); code == 0 || !strings.Contains(stderr, "still exceeded") {
		t.Fatalf("resume without a larger budget: exit %d, %s", code, stderr)
	}
	enqueue(t, env, "resume", "--max-errors", "20", st.Rotation)
	rot = waitFinished(t, rdb, st.Rotation, 2*time.Minute)
	checkReport(t, f, report(t, env, st.Rotation), rot)
	if rot.Counts.Succeeded+rot.Counts.Failed != 200 || rot.Counts.Failed != int64(len(f.sim.BadServers())) {
		t.Fatalf("after resume: %+v; want every bad server failed and the rest succeeded", rot.Counts)
	}
}

// TestPauseAfterWave: the rotation pauses when wave 1 ends, and resume
// starts wave 2.
func TestPauseAfterWave(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 60, Seed: 4, JobLatency: 300 * time.Millisecond})
	env := baseEnv(r, f)
	st := startRotation(t, env, "--waves", "2,100%", "--pause-after-wave", writeTargets(t, f))
	startWorker(t, env)
	rdb := r.Client(t)
	rot := waitRotation(t, rdb, st.Rotation, "paused after wave 1", time.Minute, func(r *tasks.Rotation) bool { return r.State == tasks.StatePaused })
	if rot.Wave != 2 || rot.Counts.Succeeded != 2 || rot.Counts.Pending != 58 {
		t.Fatalf("paused: wave %d, %+v; want wave 2 waiting, 2 succeeded", rot.Wave, rot.Counts)
	}
	time.Sleep(time.Second)
	if n := updateCalls(f); n != 1 {
		t.Fatalf("%d UpdateKeypair calls while paused after wave 1, want 1", n)
	}
	out := enqueue(t, env, "resume", st.Rotation)
	if !strings.Contains(out, "wave 2/2") {
		t.Fatalf("resume printed %q", out)
	}
	rot = waitFinished(t, rdb, st.Rotation, time.Minute)
	if rot.State != tasks.StateSucceeded || rot.Counts.Succeeded != 60 {
		t.Fatalf("rotation %s %+v, want all 60 succeeded", rot.State, rot.Counts)
	}
}

// TestErrorBudgetTripsAtNPlusOne: with one server per chunk, the budget of
// 3 trips at the 4th failure, and no UpdateKeypair call is made after it.
func TestErrorBudgetTripsAtNPlusOne(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 200, Seed: 13, BadServerRate: 0.1, BadServerKind: cphsim.BadRejected})
	env := baseEnv(r, f)
	st := startRotation(t, env, "--chunk-size", "1", "--max-errors", "3", writeTargets(t, f))
	startWorker(t, env, "--submit-rate", "10/s")
	startWorker(t, env, "--submit-rate", "10/s")
	rdb := r.Client(t)
	rot := waitRotation(t, rdb, st.Rotation, "halted", time.Minute, (*tasks.Rotation).Halted)
	calls := updateCalls(f)
	if !strings.Contains(rot.Reason, "4 failed > max 3") {
		t.Fatalf("reason %q, want the 4th failure to trip a budget of 3", rot.Reason)
	}
	rot = waitRotation(t, rdb, st.Rotation, "without running chunks", 30*time.Second, func(r *tasks.Rotation) bool { return r.Counts.Running == 0 })
	time.Sleep(2 * time.Second)
	if after := updateCalls(f); after != calls {
		t.Fatalf("UpdateKeypair calls went from %d to %d after the budget tripped", calls, after)
	}
	if rot.Counts.Pending == 0 || int64(calls) != rot.Counts.Submitted {
		t.Fatalf("halted with %+v after %d calls: want servers left pending, one call per submitted server", rot.Counts, calls)
	}
	enqueue(t, env, "cancel", st.Rotation)
	rot = waitFinished(t, rdb, st.Rotation, 30*time.Second)
	if rot.State != tasks.StateCancelled || rot.Counts.Pending != 0 || rot.Counts.Cancelled == 0 {
		t.Fatalf("after cancel: %s %+v", rot.State, rot.Counts)
	}
}

// TestPauseAcrossThreeWorkers: pause stops every worker's submissions
// within 5 s; resume runs the rotation to completion.
func TestPauseAcrossThreeWorkers(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 400, Seed: 21, JobLatency: 300 * time.Millisecond})
	env := baseEnv(r, f)
	st := startRotation(t, env, "--chunk-size", "5", writeTargets(t, f))
	for range 3 {
		startWorker(t, env, "--submit-rate", "8/s")
	}
	rdb := r.Client(t)
	waitRotation(t, rdb, st.Rotation, "a quarter submitted", time.Minute, func(r *tasks.Rotation) bool { return r.Counts.Submitted >= 100 })
	enqueue(t, env, "pause", st.Rotation)
	time.Sleep(5 * time.Second)
	calls := updateCalls(f)
	time.Sleep(3 * time.Second)
	if after := updateCalls(f); after != calls {
		t.Fatalf("UpdateKeypair calls went from %d to %d more than 5 s after the pause", calls, after)
	}
	if rot := readRotation(t, rdb, st.Rotation); rot.State != tasks.StatePaused || rot.Counts.Pending == 0 {
		t.Fatalf("paused rotation %s %+v: want servers left", rot.State, rot.Counts)
	}
	enqueue(t, env, "resume", st.Rotation)
	rot := waitFinished(t, rdb, st.Rotation, 2*time.Minute)
	checkReport(t, f, report(t, env, st.Rotation), rot)
	if rot.State != tasks.StateSucceeded || rot.Counts.Succeeded != 400 {
		t.Fatalf("rotation %s %+v, want all 400 succeeded", rot.State, rot.Counts)
	}
}

// TestCancelLeavesNothingPending: cancel mid-rotation, with retries
// waiting for their backoff, records every remaining server as cancelled.
func TestCancelLeavesNothingPending(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 300, Seed: 17, JobLatency: 300 * time.Millisecond, JobFailRate: 0.3})
	env := baseEnv(r, f)
	st := startRotation(t, env, "--chunk-size", "10", "--max-attempts", "5", "--max-errors", "100%", writeTargets(t, f))
	startWorker(t, env, "--submit-rate", "5/s")
	rdb := r.Client(t)
	waitRotation(t, rdb, st.Rotation, "retrying", time.Minute, func(r *tasks.Rotation) bool {
		return r.Counts.Retried > 0 && r.Counts.Submitted >= 60
	})
	out := enqueue(t, env, "cancel", st.Rotation)
	if !strings.Contains(out, "cancelled") {
		t.Fatalf("cancel printed %q", out)
	}
	rot := waitFinished(t, rdb, st.Rotation, 30*time.Second)
	if rot.State != tasks.StateCancelled || rot.Counts.Pending != 0 || rot.Counts.Running != 0 || rot.Counts.Cancelled == 0 {
		t.Fatalf("cancelled rotation %s %+v", rot.State, rot.Counts)
	}
	rows := report(t, env, st.Rotation)
	if len(rows) != 300 {
		t.Fatalf("report has %d rows, want 300", len(rows))
	}
	for _, row := range rows {
		kp, _ := f.sim.Keypair(row.ServerID)
		switch row.Outcome {
		case tasks.OutcomeSucceeded:
			if kp != newKeypair {
				t.Errorf("server %s succeeded but is on %q", row.ServerID, kp)
			}
		case tasks.OutcomeCancelled, tasks.OutcomeFailed:
			if kp == newKeypair {
				t.Errorf("server %s is %s but on the new keypair", row.ServerID, row.Outcome)
			}
		default:
			t.Errorf("server %s is %s after cancel", row.ServerID, row.Outcome)
		}
	}
}

// TestVerificationCatchesLyingJobs: jobs that report success without
// changing the keypair fail verification by pages, permanently;
// --verify=false would have believed them.
func TestVerificationCatchesLyingJobs(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 100, Seed: 8, JobLatency: 300 * time.Millisecond, LieOnSuccess: true})
	env := baseEnv(r, f)
	file := writeTargets(t, f)
	st := startRotation(t, env, "--chunk-size", "20", "--max-errors", "100%", file)
	planned := f.sim.Stats().Calls[cphsim.APIListServers]
	startWorker(t, env)
	rdb := r.Client(t)
	rot := waitFinished(t, rdb, st.Rotation, time.Minute)
	if rot.Counts.Failed != 100 {
		t.Fatalf("counts %+v: want every lying success failed", rot.Counts)
	}
	for _, row := range report(t, env, st.Rotation) {
		if row.ErrorCode != tasks.CodeVerifyMismatch || row.Attempts != 1 || f.sim.SubmitCount(row.ServerID) != 1 {
			t.Fatalf("row %+v (submitted %d times): want %s after one attempt", row, f.sim.SubmitCount(row.ServerID), tasks.CodeVerifyMismatch)
		}
	}
	// The 100 servers are one page of the list: one read verifies them
	// all (two if the page was read before its last jobs ended).
	calls := f.sim.Stats().Calls
	if pages := calls[cphsim.APIListServers] - planned; pages < 1 || pages > 2 || calls[cphsim.APIShowServer] != 0 {
		t.Fatalf("verification made %d page reads and %d ShowServer calls; want 1-2 pages, no single reads", pages, calls[cphsim.APIShowServer])
	}
	blind := startRotation(t, env, "--rotation-id", "unverified", "--verify=false", file)
	rot = waitFinished(t, rdb, blind.Rotation, time.Minute)
	if rot.Counts.Succeeded != 100 {
		t.Fatalf("--verify=false: %+v, want the lies believed", rot.Counts)
	}
}

// TestRollbackRestoresOldKeypairs: a rollback puts every changed server
// back on the keypair it had, and leaves the servers the rotation skipped.
func TestRollbackRestoresOldKeypairs(t *testing.T) {
	r := testredis.Mini(t)
	var servers []cph.Server
	before := map[string]string{}
	for i := range 150 {
		s := cph.Server{ServerID: fmt.Sprintf("%032x", i+1), ServerName: fmt.Sprintf("cph-%03d", i), Status: cph.ServerStatusNormal,
			KeypairName: []string{"kp-a", "kp-b", "kp-c", newKeypair}[i%4]}
		servers = append(servers, s)
		before[s.ServerID] = s.KeypairName
	}
	f := startSim(t, cphsim.Options{Fleet: servers, Seed: 2, JobLatency: 300 * time.Millisecond})
	env := baseEnv(r, f)
	file := writeTargets(t, f)
	st := startRotation(t, env, file)
	startWorker(t, env)
	rdb := r.Client(t)
	rot := waitFinished(t, rdb, st.Rotation, time.Minute)
	if rot.Counts.Skipped == 0 || rot.State != tasks.StateSucceeded {
		t.Fatalf("rotation %s %+v", rot.State, rot.Counts)
	}
	var back started
	if err := json.Unmarshal([]byte(enqueue(t, env, "rollback", "--json", st.Rotation)), &back); err != nil {
		t.Fatal(err)
	}
	if back.Rotation != st.Rotation+"-rollback" || int64(back.Servers) != rot.Counts.Succeeded {
		t.Fatalf("rollback = %+v; want %s-rollback over the %d changed servers", back, st.Rotation, rot.Counts.Succeeded)
	}
	rb := waitFinished(t, rdb, back.Rotation, time.Minute)
	if rb.State != tasks.StateSucceeded {
		t.Fatalf("rollback %s %+v", rb.State, rb.Counts)
	}
	for id, kp := range before {
		if got, _ := f.sim.Keypair(id); got != kp {
			t.Errorf("server %s is on %q after the rollback, want %q", id, got, kp)
		}
	}
	blind := startRotation(t, env, "--rotation-id", "no-old", "--skip-matching=false", file)
	waitFinished(t, rdb, blind.Rotation, time.Minute)
	if _, code, stderr := enqueueCode(t, env, "rollback", blind.Rotation); code != 2 || !strings.Contains(stderr, "150 of 150 changed servers have no recorded old keypair") {
		t.Fatalf("rollback without old keypairs: exit %d: %s", code, stderr)
	}
}

// TestFinishedEventOnce: many one-server chunks end together on three
// workers; the rotation:finished event is enqueued exactly once.
func TestFinishedEventOnce(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 240, Seed: 6, JobLatency: 300 * time.Millisecond})
	env := baseEnv(r, f)
	st := startRotation(t, env, "--chunk-size", "1", "--retention", "1h", writeTargets(t, f))
	var ws []*worker
	for range 3 {
		ws = append(ws, startWorker(t, env, "--submit-rate", "200/s", "--poll-rate", "400/s"))
	}
	rdb := r.Client(t)
	rot := waitFinished(t, rdb, st.Rotation, time.Minute)
	time.Sleep(2 * time.Second) // any late finisher has run
	insp := asynq.NewInspectorFromRedisClient(rdb)
	tasksInQueue, err := insp.ListPendingTasks(tasks.QueueEvents)
	if err != nil {
		t.Fatal(err)
	}
	if len(tasksInQueue) != 1 || tasksInQueue[0].ID != tasks.FinishedTaskID(st.Rotation) {
		t.Fatalf("%d tasks in %s, want exactly one %s", len(tasksInQueue), tasks.QueueEvents, tasks.FinishedTaskID(st.Rotation))
	}
	var sum tasks.Summary
	if err := json.Unmarshal(tasksInQueue[0].Payload, &sum); err != nil || sum.State != tasks.StateSucceeded || sum.Counts.Succeeded != 240 {
		t.Fatalf("finished payload %s: %v", tasksInQueue[0].Payload, err)
	}
	finishers := 0
	for _, w := range ws {
		finishers += strings.Count(w.logs.String(), `"msg":"rotation finished"`)
	}
	if finishers != 1 {
		t.Fatalf("%d workers logged finishing the rotation, want 1", finishers)
	}
	if ttl := rdb.TTL(context.Background(), "cph-rekey:{"+rot.ID+"}:meta").Val(); ttl <= 0 || ttl > time.Hour {
		t.Fatalf("rotation record TTL %s, want the --retention of 1h", ttl)
	}
}

// TestFinalStatesAndExitCodes ends one rotation in each final state and
// checks what `enqueue status --wait` says and exits with: 0 succeeded,
// 3 completed with errors, 4 failed (halted by its budget), 5 cancelled.
func TestFinalStatesAndExitCodes(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 400, Seed: 21, JobLatency: 300 * time.Millisecond, BadServerRate: 0.05,
		BadServerKind: cphsim.BadAbnormal})
	env := baseEnv(r, f)
	startWorker(t, env)
	bad := map[string]bool{}
	for _, b := range f.sim.BadServers() {
		bad[b.ServerID] = true
	}
	// Four target lists of their own: two of good servers, two with some
	// bad ones among them.
	var good1, good2, rest []string
	for _, s := range f.sim.Servers() {
		switch {
		case !bad[s.ServerID] && len(good1) < 100:
			good1 = append(good1, s.ServerID)
		case !bad[s.ServerID] && len(good2) < 100:
			good2 = append(good2, s.ServerID)
		default:
			rest = append(rest, s.ServerID)
		}
	}
	some1, some2 := rest[:len(rest)/2], rest[len(rest)/2:]
	if countBad(bad, some1) == 0 || countBad(bad, some2) == 0 {
		t.Fatalf("no bad servers among the lists: the seed no longer suits the test")
	}
	tests := []struct {
		name    string
		targets []string
		args    []string
		cancel  bool
		want    tasks.State
		code    int
	}{
		{"succeeded", good1, nil, false, tasks.StateSucceeded, 0},
		{"completed_with_errors", some1, []string{"--max-errors", "100%"}, false, tasks.StateCompletedWithErrors, 3},
		{"failed", some2, []string{"--max-errors", "0", "--chunk-size", "10"}, false, tasks.StateFailed, 4},
		{"cancelled", good2, []string{"--waves", "10", "--pause-after-wave"}, true, tasks.StateCancelled, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st := startRotation(t, env, append(tt.args, writeList(t, tt.targets))...)
			if tt.cancel {
				waitRotation(t, r.Client(t), st.Rotation, "paused after wave 1", time.Minute, func(rot *tasks.Rotation) bool {
					return rot.State == tasks.StatePaused
				})
				enqueue(t, env, "cancel", st.Rotation)
			}
			out, code, stderr := enqueueCode(t, env, "status", "--wait", "--interval", "200ms", st.Rotation)
			if code != tt.code {
				t.Fatalf("status --wait exit %d, want %d\nstdout: %s\nstderr: %s", code, tt.code, out, stderr)
			}
			if rot := readRotation(t, r.Client(t), st.Rotation); rot.State != tt.want {
				t.Fatalf("state %s, want %s", rot.State, tt.want)
			}
			if !strings.Contains(out+stderr, string(tt.want)) {
				t.Errorf("status --wait does not name the state %s:\n%s%s", tt.want, out, stderr)
			}
		})
	}
}

func countBad(bad map[string]bool, ids []string) int {
	n := 0
	for _, id := range ids {
		if bad[id] {
			n++
		}
	}
	return n
}
