// Package e2e runs cph-rekey's real commands as real processes against the
// CPH simulator and Redis (miniredis, and a real Redis when
// CPH_REKEY_TEST_REDIS is set): whole rotations with faults, worker crashes,
// re-runs, SIGTERM, and the secrets that must never leak.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

const (
	testAK      = "E2EACCESSKEYQWERTY12"
	testSK      = "e2eSecretKeyThatMustNeverLeak0123456789"
	testProject = "0123456789abcdef0123456789abcdef"
	newKeypair  = "kp-e2e-new"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "cph-rekey-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	for _, cmd := range []string{"worker", "enqueue"} {
		out, err := exec.Command("go", "build", "-o", filepath.Join(dir, cmd), "../cmd/"+cmd).CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", cmd, err, out)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// fleet is a simulator serving a test's fleet.
type fleet struct {
	sim *cphsim.Sim
	url string
}

func startSim(t testing.TB, opts cphsim.Options) *fleet {
	t.Helper()
	opts.ProjectID, opts.AccessKey, opts.SecretKey = testProject, testAK, testSK
	sim := cphsim.New(opts)
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &fleet{sim: sim, url: srv.URL}
}

// baseEnv is the environment of every process a test starts.
func baseEnv(r *testredis.Redis, f *fleet) []string {
	return append(os.Environ(),
		"REDIS_URL="+r.URL(),
		"REKEY_ENDPOINT="+f.url,
		"HUAWEICLOUD_SDK_AK="+testAK,
		"HUAWEICLOUD_SDK_SK="+testSK,
		"HUAWEICLOUD_SDK_PROJECT_ID="+testProject,
	)
}

// worker is a worker process.
type worker struct {
	cmd  *exec.Cmd
	logs *syncBuffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, once done
}

// wait waits for the process to exit and returns its exit status.
func (w *worker) wait() error {
	<-w.done
	return w.err
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startWorker starts a worker process tuned for tests: short polls and
// generous rates (the simulator's quota is what throttles; verification
// reads one server a call, so its rate decides how long a test takes).
func startWorker(t testing.TB, env []string, args ...string) *worker {
	t.Helper()
	args = append([]string{"--admin-addr", "", "--first-poll", "1s", "--poll-cap", "2s", "--concurrency", "10",
		"--submit-rate", "40/s", "--poll-rate", "80/s", "--read-rate", "400/s", "--shutdown-timeout", "5s"}, args...)
	cmd := exec.Command(filepath.Join(binDir, "worker"), args...)
	cmd.Env = env
	w := &worker{cmd: cmd, logs: &syncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = w.logs, w.logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		w.err = cmd.Wait()
		close(w.done)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		w.wait()
		if t.Failed() {
			t.Logf("worker %d logs (tail):\n%s", cmd.Process.Pid, tail(w.logs.String(), 3000))
		}
	})
	return w
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// enqueue runs the enqueue command and returns its stdout; it fails the
// test on a non-zero exit.
func enqueue(t testing.TB, env []string, args ...string) string {
	t.Helper()
	out, code, stderr := enqueueCode(t, env, args...)
	if code != 0 {
		t.Fatalf("enqueue %v: exit %d: %s", args, code, stderr)
	}
	return out
}

func enqueueCode(t testing.TB, env []string, args ...string) (string, int, string) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "enqueue"), args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return out.String(), code, errb.String()
}

func writeTargets(t testing.TB, f *fleet) string {
	t.Helper()
	var b strings.Builder
	for _, s := range f.sim.Servers() {
		b.WriteString(s.ServerID + "\n")
	}
	p := filepath.Join(t.TempDir(), "servers.txt")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type started struct {
	Rotation string `json:"rotation"`
	Created  bool   `json:"created"`
	Enqueued int    `json:"enqueued"`
	Chunks   int    `json:"chunks"`
	Servers  int64  `json:"servers"`
}

func startRotation(t testing.TB, env []string, args ...string) started {
	t.Helper()
	var st started
	out := enqueue(t, env, append([]string{"start", "--json", "--keypair", newKeypair}, args...)...)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("enqueue start output %q: %v", out, err)
	}
	return st
}

// waitSubmitted polls the rotation until at least n server submissions
// happened: a point mid-rotation to crash or stop a worker at.
func waitSubmitted(t testing.TB, rdb redis.UniversalClient, id string, n int64) {
	t.Helper()
	store := tasks.NewStore(rdb, "")
	for {
		rot, err := store.Rotation(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if rot.Finished() {
			t.Fatalf("rotation %s finished before %d submissions", id, n)
		}
		if rot.Counts.Submitted >= n {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitFinished polls the rotation until it finishes.
func waitFinished(t testing.TB, rdb redis.UniversalClient, id string, timeout time.Duration) *tasks.Rotation {
	t.Helper()
	store := tasks.NewStore(rdb, "")
	deadline := time.Now().Add(timeout)
	for {
		rot, err := store.Rotation(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if rot.Finished() {
			return rot
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation %s not finished after %s: %+v", id, timeout, rot.Counts)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func report(t testing.TB, env []string, id string) []tasks.ReportRow {
	t.Helper()
	var rows []tasks.ReportRow
	if err := json.Unmarshal([]byte(enqueue(t, env, "report", "--format", "json", id)), &rows); err != nil {
		t.Fatal(err)
	}
	return rows
}

// checkReport holds the invariants of a finished rotation against the
// simulator's own state: every target appears once and is terminal, a
// server succeeded exactly when the simulator has it on the new keypair,
// failures carry a code, and no server was submitted more often than its
// attempts (plus the measured unknown-outcome resubmissions) allow.
func checkReport(t *testing.T, f *fleet, rows []tasks.ReportRow, rot *tasks.Rotation) {
	t.Helper()
	seen := map[string]bool{}
	bad := map[string]string{}
	for _, b := range f.sim.BadServers() {
		bad[b.ServerID] = b.ErrorCode
	}
	extra := 0
	for _, r := range rows {
		if seen[r.ServerID] {
			t.Errorf("server %s appears twice in the report", r.ServerID)
		}
		seen[r.ServerID] = true
		kp, _ := f.sim.Keypair(r.ServerID)
		switch r.Outcome {
		case tasks.OutcomeSucceeded:
			if kp != newKeypair {
				t.Errorf("server %s reported succeeded but the simulator has keypair %q", r.ServerID, kp)
			}
		case tasks.OutcomeFailed:
			if kp == newKeypair {
				t.Errorf("server %s reported failed but the simulator has it on the new keypair", r.ServerID)
			}
			if r.ErrorCode == "" {
				t.Errorf("server %s failed without an error code", r.ServerID)
			}
			if code, ok := bad[r.ServerID]; ok && r.ErrorCode != code {
				t.Errorf("permanently bad server %s failed with %q, want %q", r.ServerID, r.ErrorCode, code)
			}
		case tasks.OutcomeSkipped:
		default:
			t.Errorf("server %s is %s after the rotation finished", r.ServerID, r.Outcome)
		}
		if r.Attempts > rot.MaxAttempts {
			t.Errorf("server %s made %d attempts, more than --max-attempts %d", r.ServerID, r.Attempts, rot.MaxAttempts)
		}
		if n := f.sim.SubmitCount(r.ServerID); n > r.Attempts {
			extra += n - r.Attempts
		}
	}
	for _, s := range f.sim.Servers() {
		if !seen[s.ServerID] {
			t.Errorf("server %s is missing from the report", s.ServerID)
		}
	}
	if allowed := int(rot.Counts.Resubmitted) * rot.ChunkSize; extra > allowed {
		t.Errorf("servers were submitted %d times more than their attempts; only %d unknown-outcome resubmissions of chunks (≤%d servers) explain extras",
			extra, rot.Counts.Resubmitted, allowed)
	}
}

// TestRotationWithFaults is the end-to-end run: 2,000 servers, faults on,
// two worker processes.
func TestRotationWithFaults(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		// The quotas are below the workers' rates, so 429s happen.
		f := startSim(t, cphsim.Options{
			Servers: 2000, Seed: 7,
			JobLatency: 500 * time.Millisecond, JobJitter: 400 * time.Millisecond,
			UpdateKeypairQuota: 8, ListJobsQuota: 15,
			Error5xxRate: 0.02, JobFailRate: 0.05, BadServerRate: 0.01,
		})
		env := baseEnv(r, f)
		st := startRotation(t, env, "--max-attempts", "5", writeTargets(t, f))
		if !st.Created || st.Enqueued != 20 || st.Servers != 2000 {
			t.Fatalf("start = %+v, want 2000 servers in 20 chunks", st)
		}
		startWorker(t, env)
		startWorker(t, env)
		rot := waitFinished(t, r.Client(t), st.Rotation, 4*time.Minute)
		rows := report(t, env, st.Rotation)
		if len(rows) != 2000 {
			t.Fatalf("report has %d rows, want 2000", len(rows))
		}
		checkReport(t, f, rows, rot)
		stats := f.sim.Stats()
		if stats.Throttled[cphsim.APIUpdateKeypair]+stats.Throttled[cphsim.APIListJobs] == 0 {
			t.Error("no 429s were seen: the test is meant to run into the quota")
		}
		if rot.Counts.Failed == 0 || rot.Counts.Succeeded < 1900 {
			t.Fatalf("counts %+v: want ~1%% permanent failures and the rest succeeded", rot.Counts)
		}
		// Retries are coalesced across chunks: a retry batch per 100
		// retried servers, and at most two smaller ones per retry round
		// (the 5 attempts make 4 rounds), not one per failed chunk.
		retryBatches := rot.Batches - rot.Chunks
		if limit := int(rot.Counts.Retried+99)/100 + 2*(rot.MaxAttempts-1); retryBatches > limit {
			t.Errorf("%d retry batches for %d retried servers of %d chunks; want at most %d", retryBatches, rot.Counts.Retried, rot.Chunks, limit)
		}
		t.Logf("%d chunks, %d retry batches carrying %d retries", rot.Chunks, retryBatches, rot.Counts.Retried)
		t.Logf("rotation %s: %+v; simulator: %d UpdateKeypair, %d ListJobs calls, %d+%d 429s, %d injected 5xx",
			rot.ID, rot.Counts, stats.Calls[cphsim.APIUpdateKeypair], stats.Calls[cphsim.APIListJobs],
			stats.Throttled[cphsim.APIUpdateKeypair], stats.Throttled[cphsim.APIListJobs],
			stats.Injected5xx[cphsim.APIUpdateKeypair]+stats.Injected5xx[cphsim.APIListJobs])
	})
}

// TestRerunSubmitsNothingNew runs the same start command twice while the
// rotation runs and once more after it finished.
func TestRerunSubmitsNothingNew(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 300, Seed: 3, JobLatency: 300 * time.Millisecond})
	env := baseEnv(r, f)
	file := writeTargets(t, f)
	first := startRotation(t, env, file)
	second := startRotation(t, env, file)
	if second.Rotation != first.Rotation || second.Created || second.Enqueued != 0 {
		t.Fatalf("second start = %+v, want the same rotation %s, nothing enqueued", second, first.Rotation)
	}
	startWorker(t, env)
	waitFinished(t, r.Client(t), first.Rotation, 2*time.Minute)
	writes := f.sim.Stats().Calls[cphsim.APIUpdateKeypair]
	third := startRotation(t, env, file)
	if third.Rotation != first.Rotation || third.Enqueued != 0 {
		t.Fatalf("start after completion = %+v, want nothing enqueued", third)
	}
	// A new rotation id re-reads the fleet: every server is on the keypair
	// already, so skip-matching leaves nothing to submit.
	fourth := startRotation(t, env, "--rotation-id", "again", file)
	if fourth.Enqueued != 0 {
		t.Fatalf("new rotation over a rotated fleet enqueued %d chunks", fourth.Enqueued)
	}
	time.Sleep(2 * time.Second)
	if got := f.sim.Stats().Calls[cphsim.APIUpdateKeypair]; got != writes {
		t.Fatalf("UpdateKeypair calls went from %d to %d after re-runs", writes, got)
	}
	for _, s := range f.sim.Servers() {
		if n := f.sim.SubmitCount(s.ServerID); n != 1 {
			t.Fatalf("server %s submitted %d times", s.ServerID, n)
		}
	}
}

// TestWorkerCrash SIGKILLs worker processes mid-rotation and restarts them:
// the rotation completes with every server accounted for, and no chunk
// whose checkpoint was written is submitted again.
func TestWorkerCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash recovery waits for asynq's 30 s lease and 1 min recoverer")
	}
	r := testredis.Mini(t)
	if os.Getenv(testredis.EnvAddr) != "" {
		r = testredis.Real(t)
	}
	f := startSim(t, cphsim.Options{Servers: 1000, Seed: 11, JobLatency: time.Second, JobJitter: 500 * time.Millisecond,
		UpdateKeypairQuota: 10, JobFailRate: 0.03})
	env := baseEnv(r, f)
	st := startRotation(t, env, "--chunk-size", "20", writeTargets(t, f))
	a, b := startWorker(t, env), startWorker(t, env)
	rdb := r.Client(t)
	waitSubmitted(t, rdb, st.Rotation, 300)
	a.cmd.Process.Signal(syscall.SIGKILL)
	b.cmd.Process.Signal(syscall.SIGKILL)
	a.wait()
	b.wait()
	t.Log("killed both workers mid-rotation; restarting two")
	startWorker(t, env)
	startWorker(t, env)
	rot := waitFinished(t, rdb, st.Rotation, 5*time.Minute)
	checkReport(t, f, report(t, env, st.Rotation), rot)
	t.Logf("after the crash: %+v (resubmitted chunks whose outcome was unknown: %d)", rot.Counts, rot.Counts.Resubmitted)
}
