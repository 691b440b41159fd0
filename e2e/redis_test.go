package e2e

// Redis in production: real redis-server processes on loopback, started
// by the tests, killed and restarted under running rotations. Each test
// skips, saying why, only when redis-server or redis-cli is not installed.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/redisurl"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// needRedisBinaries skips the test when redis-server or redis-cli is
// missing (.ci/run installs them and reports these skips).
func needRedisBinaries(t *testing.T) {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("SKIP %s: %s is not installed (apt-get install redis-server redis-tools); this test starts its own Redis processes", t.Name(), bin)
		}
	}
}

// freePort returns a loopback port nothing listens on; with bus set, port
// + 10000 (Redis Cluster's bus port) is free too.
func freePort(t *testing.T, bus bool) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ok := true
		if bus {
			ok = port+10000 < 65536
			if ok {
				ln2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+10000))
				ok = err == nil
				if ok {
					ln2.Close()
				}
			}
		}
		ln.Close()
		if ok {
			return port
		}
	}
	t.Fatal("no free loopback port")
	return 0
}

// redisServer is a redis-server (or redis-server --sentinel) process.
type redisServer struct {
	t     *testing.T
	name  string
	port  int
	conf  string
	ready string // the log line that says it serves
	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	logs  *syncBuffer
}

// startRedis writes conf (a redis.conf body) to a file in dir and starts
// redis-server on it; sentinel starts it as a sentinel.
func startRedis(t *testing.T, dir, name string, port int, conf string, sentinel bool) *redisServer {
	t.Helper()
	s := newRedis(t, dir, name, port, conf, sentinel)
	s.start()
	return s
}

// newRedis writes the configuration of a server startRedis would start,
// without starting it.
func newRedis(t *testing.T, dir, name string, port int, conf string, sentinel bool) *redisServer {
	t.Helper()
	p := filepath.Join(dir, name+".conf")
	if err := os.WriteFile(p, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	s := &redisServer{t: t, name: name, port: port, conf: p, ready: "Ready to accept connections", logs: &syncBuffer{}}
	if sentinel {
		s.ready = "Sentinel ID is"
	}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("%s logs (tail):\n%s", s.name, tail(s.logs.String(), 2000))
		}
	})
	return s
}

func (s *redisServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// start starts the process and waits until it says it serves.
func (s *redisServer) start() {
	s.t.Helper()
	if err := s.tryStart(); err != nil {
		s.t.Fatal(err)
	}
}

// tryStart starts the process and waits until it says it serves, or
// returns why it did not.
func (s *redisServer) tryStart() error {
	from := len(s.logs.String())
	args := []string{s.conf}
	if s.ready == "Sentinel ID is" {
		args = append(args, "--sentinel")
	}
	cmd := exec.Command("redis-server", args...)
	cmd.Stdout, cmd.Stderr = s.logs, s.logs
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %v", s.name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	s.mu.Lock()
	s.cmd, s.done = cmd, done
	s.mu.Unlock()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if strings.Contains(s.logs.String()[from:], s.ready) {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited at start:\n%s", s.name, s.logs.String()[from:])
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after 30 s:\n%s", s.name, s.logs.String()[from:])
		}
	}
}

// signal sends sig to the process: SIGSTOP freezes a server as a hung
// host would (its connections neither answer nor close), SIGCONT thaws it.
func (s *redisServer) signal(sig syscall.Signal) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Errorf("%s: %s: %v", s.name, sig, err)
	}
}

// kill SIGKILLs the process (no shutdown, no final save) and waits for it.
func (s *redisServer) kill() {
	s.mu.Lock()
	cmd, done := s.cmd, s.done
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// redisEnv is the environment of worker and enqueue processes on url.
func redisEnv(url string, f *fleet, extra ...string) []string {
	env := append(os.Environ(),
		"REDIS_URL="+url,
		"REKEY_ENDPOINT="+f.url,
		"HUAWEICLOUD_SDK_AK="+testAK,
		"HUAWEICLOUD_SDK_SK="+testSK,
		"HUAWEICLOUD_SDK_PROJECT_ID="+testProject,
	)
	return append(env, extra...)
}

// client connects the test itself the way the commands do.
func client(t *testing.T, url string, opts redisurl.Options) redis.UniversalClient {
	t.Helper()
	c, err := redisurl.Parse(url, opts)
	if err != nil {
		t.Fatal(err)
	}
	redisurl.SetLogger(nil) // the test prints what it measures; dial failures are expected
	rdb := c.Client()
	t.Cleanup(func() { rdb.Close() })
	return rdb
}

// progress samples a rotation every 100 ms while Redis comes and goes,
// to measure the stall a kill causes: the time from the kill until the
// rotation moves again.
type progress struct {
	mu      sync.Mutex
	samples []progressSample
	stop    context.CancelFunc
	stopped chan struct{}
}

type progressSample struct {
	at   time.Time
	done int64 // servers terminal; -1 when Redis could not be read
	subs int64 // server submissions
}

func watchProgress(rdb redis.UniversalClient, id string) *progress {
	ctx, cancel := context.WithCancel(context.Background())
	p := &progress{stop: cancel, stopped: make(chan struct{})}
	store := tasks.NewStore(rdb, "")
	go func() {
		defer close(p.stopped)
		for ctx.Err() == nil {
			s := progressSample{at: time.Now(), done: -1, subs: -1}
			rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
			if rot, err := store.Rotation(rctx, id); err == nil {
				s.done, s.subs = rot.Counts.Done(), rot.Counts.Submitted
			}
			rcancel()
			p.mu.Lock()
			p.samples = append(p.samples, s)
			p.mu.Unlock()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return p
}

// stall reports, for a kill at killAt: how long the test could not read
// the rotation, and how long until it moved (servers finished or
// submitted) past where it stood at the kill.
func (p *progress) stall(killAt time.Time) (unreadable, moved time.Duration) {
	p.stop()
	<-p.stopped
	p.mu.Lock()
	defer p.mu.Unlock()
	var done, subs int64 = -1, -1
	var lastErr time.Time
	for _, s := range p.samples {
		if !s.at.After(killAt) {
			if s.done >= 0 {
				done, subs = s.done, s.subs
			}
			continue
		}
		if s.done < 0 {
			lastErr = s.at
			continue
		}
		if s.done > done || s.subs > subs {
			moved = s.at.Sub(killAt)
			break
		}
	}
	if !lastErr.IsZero() {
		unreadable = lastErr.Sub(killAt)
	}
	return unreadable, moved
}

// waitFinishedThrough waits for the rotation to finish, reading through
// Redis errors (the server may be down or failing over).
func waitFinishedThrough(t *testing.T, rdb redis.UniversalClient, id string, timeout time.Duration) *tasks.Rotation {
	t.Helper()
	store := tasks.NewStore(rdb, "")
	var last error
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		rot, err := store.Rotation(ctx, id)
		cancel()
		if err != nil {
			last = err
			continue
		}
		if rot.Finished() {
			return rot
		}
		last = fmt.Errorf("counts %+v", rot.Counts)
	}
	t.Fatalf("rotation %s not finished after %s: %v", id, timeout, last)
	return nil
}

// extraSubmissions counts server submissions beyond each server's
// attempts: the duplicates a crash caused, as the simulator saw them.
func extraSubmissions(f *fleet, rows []tasks.ReportRow) int {
	extra := 0
	for _, r := range rows {
		if n := f.sim.SubmitCount(r.ServerID); n > r.Attempts {
			extra += n - r.Attempts
		}
	}
	return extra
}

// statusWait is `enqueue status --wait` running across a fault.
type statusWait struct {
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan struct{}
	code   int
}

func startStatusWait(t *testing.T, env []string, id string) *statusWait {
	t.Helper()
	s := &statusWait{stderr: &syncBuffer{}, done: make(chan struct{})}
	s.cmd = exec.Command(filepath.Join(binDir, "enqueue"), "status", "--wait", "--interval", "500ms", id)
	s.cmd.Env = env
	s.cmd.Stderr = s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		err := s.cmd.Wait()
		if ee, ok := err.(*exec.ExitError); ok {
			s.code = ee.ExitCode()
		} else if err != nil {
			s.code = -1
		}
		close(s.done)
	}()
	t.Cleanup(func() { s.cmd.Process.Kill(); <-s.done })
	return s
}

// check waits for status --wait to exit and holds that it rode through.
func (s *statusWait) check(t *testing.T) {
	t.Helper()
	select {
	case <-s.done:
	case <-time.After(time.Minute):
		t.Fatalf("enqueue status --wait still running a minute after the rotation finished; stderr:\n%s", s.stderr.String())
	}
	if s.code != 0 {
		t.Errorf("enqueue status --wait exited %d across the fault; stderr:\n%s", s.code, s.stderr.String())
	}
	t.Logf("enqueue status --wait exited %d; its stderr:\n%s", s.code, tail(s.stderr.String(), 600))
}

// startFaultWorkers starts the two workers of the kill tests. Their
// submit rate is half the simulator's quota, so at any moment several
// submit tasks wait in the limiter on a worker slot: the kill finds tasks
// in flight that end while Redis is away, the case that used to wait for
// asynq's recoverer (see holdWhileRedisDown in cmd/worker).
func startFaultWorkers(t *testing.T, env []string) []*worker {
	return []*worker{startWorker(t, env, "--submit-rate", "5/s:1"), startWorker(t, env, "--submit-rate", "5/s:1")}
}

// faultFleet is the fleet of the kill tests: 1,000 servers, chunks of 20,
// a quota that makes the rotation last long enough to be killed mid-way.
func faultFleet(t *testing.T, seed uint64) *fleet {
	return startSim(t, cphsim.Options{Servers: 1000, Seed: seed, JobLatency: time.Second, JobJitter: 500 * time.Millisecond,
		UpdateKeypairQuota: 10, JobFailRate: 0.03})
}

// TestRedisAOFRestart SIGKILLs an AOF Redis mid-rotation and restarts it
// from its append-only file: the rotation completes, every server
// terminal and matching the simulator; the stall and the duplicate
// submissions are printed.
func TestRedisAOFRestart(t *testing.T) {
	needRedisBinaries(t)
	t.Parallel()
	dir := t.TempDir()
	port := freePort(t, false)
	srv := startRedis(t, dir, "redis-aof", port, fmt.Sprintf(
		"port %d\nbind 127.0.0.1\ndir %s\nappendonly yes\nappendfsync everysec\nsave \"\"\nmaxmemory-policy noeviction\n", port, dir), false)
	url := "redis://" + srv.addr() + "/0"
	rdb := client(t, url, redisurl.Options{})

	f := faultFleet(t, 21)
	env := redisEnv(url, f)
	st := startRotation(t, env, "--chunk-size", "20", "--max-attempts", "5", writeTargets(t, f))
	startFaultWorkers(t, env)
	wait := startStatusWait(t, env, st.Rotation)
	waitSubmitted(t, rdb, st.Rotation, 300)

	prog := watchProgress(rdb, st.Rotation)
	time.Sleep(300 * time.Millisecond) // a sample before the kill
	down := 2 * time.Second
	if v := os.Getenv("CPH_REKEY_TEST_AOF_DOWN"); v != "" {
		// Longer outages show asynq's part: past its 30 s lease, tasks
		// in flight wait for its recoverer.
		var err error
		if down, err = time.ParseDuration(v); err != nil {
			t.Fatalf("CPH_REKEY_TEST_AOF_DOWN=%q: %v", v, err)
		}
	}
	killAt := time.Now()
	srv.kill()
	t.Logf("Redis SIGKILLed mid-rotation; restarting it from its AOF in %s", down)
	time.Sleep(down)
	srv.start()
	restartedAt := time.Now()

	rot := waitFinishedThrough(t, rdb, st.Rotation, 5*time.Minute)
	finishedAt := time.Now()
	unreadable, moved := prog.stall(killAt)
	rows := report(t, env, st.Rotation)
	if len(rows) != 1000 {
		t.Fatalf("report has %d rows, want 1000", len(rows))
	}
	checkReport(t, f, rows, rot)
	wait.check(t)
	t.Logf("AOF restart: Redis down %s (kill → restarted and loaded); rotation unreadable for %s, moving again %s after the kill; finished %s after the kill",
		restartedAt.Sub(killAt).Round(100*time.Millisecond), unreadable.Round(100*time.Millisecond), moved.Round(100*time.Millisecond),
		finishedAt.Sub(killAt).Round(time.Second))
	t.Logf("AOF restart: counts %+v; duplicate submissions: %d chunk resubmissions counted by the rotation, %d server submissions beyond attempts seen by the simulator",
		rot.Counts, rot.Counts.Resubmitted, extraSubmissions(f, rows))
}

// TestRedisSentinelFailover runs a rotation on a master with one replica
// and three sentinels and SIGKILLs the master mid-rotation: after the
// promotion the rotation completes with the same invariants.
func TestRedisSentinelFailover(t *testing.T) {
	needRedisBinaries(t)
	t.Parallel()
	master, pr, sentinels := startSentinels(t, time.Second)
	url := "redis-sentinel://" + strings.Join(sentinels, ",") + "/0?master=mymaster"
	rdb := client(t, url, redisurl.Options{})
	f := faultFleet(t, 23)
	env := redisEnv(url, f)
	st := startRotation(t, env, "--chunk-size", "20", "--max-attempts", "5", writeTargets(t, f))
	startFaultWorkers(t, env)
	wait := startStatusWait(t, env, st.Rotation)
	waitSubmitted(t, rdb, st.Rotation, 300)

	prog := watchProgress(rdb, st.Rotation)
	time.Sleep(300 * time.Millisecond)
	killAt := time.Now()
	master.kill()
	t.Log("master SIGKILLed mid-rotation; the sentinels promote the replica")

	rot := waitFinishedThrough(t, rdb, st.Rotation, 5*time.Minute)
	finishedAt := time.Now()
	unreadable, moved := prog.stall(killAt)
	promoted := sentinelMaster(t, sentinels[0])
	if promoted != "127.0.0.1:"+strconv.Itoa(pr) {
		t.Errorf("sentinels name %s as master, want the replica 127.0.0.1:%d", promoted, pr)
	}
	rows := report(t, env, st.Rotation)
	if len(rows) != 1000 {
		t.Fatalf("report has %d rows, want 1000", len(rows))
	}
	checkReport(t, f, rows, rot)
	wait.check(t)
	t.Logf("Sentinel failover: rotation unreadable for %s after the kill (down-after 1 s + election + promotion), moving again %s after it; finished %s after the kill",
		unreadable.Round(100*time.Millisecond), moved.Round(100*time.Millisecond), finishedAt.Sub(killAt).Round(time.Second))
	t.Logf("Sentinel failover: counts %+v; duplicate submissions: %d chunk resubmissions counted by the rotation, %d server submissions beyond attempts seen by the simulator",
		rot.Counts, rot.Counts.Resubmitted, extraSubmissions(f, rows))
}

// TestRedisSentinelSlowFailover freezes the master (SIGSTOP: a hung host
// or a network partition, whose connections neither answer nor refuse)
// while UpdateKeypair calls are out, for as long as a production Sentinel
// takes to fail over (down-after 18 s, then the vote: about 20 s), and
// lets it come back once the replica is promoted, as a partition heals:
// the sentinels demote it. The calls the API answers during the outage
// must checkpoint on the new master, not be submitted again: every
// server's UpdateKeypair count is its attempts (a second attempt only for
// a job that failed), no chunk counts as resubmitted, and every server is
// in the report once.
func TestRedisSentinelSlowFailover(t *testing.T) {
	needRedisBinaries(t)
	t.Parallel()
	const downAfter = 18 * time.Second
	master, pr, sentinels := startSentinels(t, downAfter)
	url := "redis-sentinel://" + strings.Join(sentinels, ",") + "/0?master=mymaster"
	rdb := client(t, url, redisurl.Options{})

	// The simulator answers UpdateKeypair a second after it has acted,
	// so calls are out when the master freezes, on the 6th call.
	sim := cphsim.New(cphsim.Options{ProjectID: testProject, AccessKey: testAK, SecretKey: testSK,
		Servers: 400, Seed: 37, JobLatency: time.Second, JobJitter: 500 * time.Millisecond,
		UpdateKeypairQuota: 10, JobFailRate: 0.03})
	var (
		mu       sync.Mutex
		calls    int
		frozenAt time.Time
		answers  []time.Time // when each UpdateKeypair answer was sent
		frozen   = make(chan struct{})
	)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || !strings.HasSuffix(r.URL.Path, "/cloud-phone/servers/open-access") {
			sim.ServeHTTP(w, r)
			return
		}
		mu.Lock()
		calls++
		if calls == 6 {
			master.signal(syscall.SIGSTOP)
			frozenAt = time.Now()
			close(frozen)
		}
		mu.Unlock()
		rec := httptest.NewRecorder()
		sim.ServeHTTP(rec, r)
		time.Sleep(time.Second)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		w.Write(rec.Body.Bytes())
		mu.Lock()
		answers = append(answers, time.Now())
		mu.Unlock()
	}))
	t.Cleanup(srv.Close)
	f := &fleet{sim: sim, url: srv.URL}
	env := redisEnv(url, f)
	st := startRotation(t, env, "--chunk-size", "20", "--max-attempts", "5", writeTargets(t, f))
	startFaultWorkers(t, env)
	wait := startStatusWait(t, env, st.Rotation)

	select {
	case <-frozen:
	case <-time.After(time.Minute):
		t.Fatal("no 6th UpdateKeypair call within a minute")
	}
	replica := "127.0.0.1:" + strconv.Itoa(pr)
	var promotedAt time.Time
	for deadline := time.Now().Add(time.Minute); promotedAt.IsZero(); time.Sleep(100 * time.Millisecond) {
		if sentinelMaster(t, sentinels[0]) == replica {
			promotedAt = time.Now()
		} else if time.Now().After(deadline) {
			t.Fatal("the sentinels did not promote the replica within a minute of the master's freeze")
		}
	}
	master.signal(syscall.SIGCONT)
	mu.Lock()
	outage := promotedAt.Sub(frozenAt)
	rode := 0
	for _, a := range answers {
		if a.After(frozenAt) && a.Before(promotedAt) {
			rode++
		}
	}
	mu.Unlock()
	t.Logf("master frozen for %s until the replica's promotion (down-after %s); %d UpdateKeypair answers came while it was",
		outage.Round(100*time.Millisecond), downAfter, rode)
	if rode == 0 {
		t.Fatal("no UpdateKeypair call was answered while the master was frozen: no checkpoint had to ride the failover, the test proves nothing")
	}

	rot := waitFinishedThrough(t, rdb, st.Rotation, 3*time.Minute)
	rows := report(t, env, st.Rotation)
	if len(rows) != 400 {
		t.Fatalf("report has %d rows, want 400", len(rows))
	}
	checkReport(t, f, rows, rot)
	for _, r := range rows {
		if n := sim.SubmitCount(r.ServerID); n != r.Attempts {
			t.Errorf("server %s: %d UpdateKeypair calls named it, for %d attempts (%s)", r.ServerID, n, r.Attempts, r.Outcome)
		}
	}
	if rot.Counts.Resubmitted != 0 {
		t.Errorf("%d chunks were submitted again after an unknown outcome; the failover should have cost a wait, not a resubmission", rot.Counts.Resubmitted)
	}
	wait.check(t)
	t.Logf("slow Sentinel failover: counts %+v, finished %s after the freeze", rot.Counts, rot.FinishedAt.Sub(frozenAt).Round(time.Second))
}

// startSentinels starts a master, its replica and three sentinels that
// fail the master over once it has not answered for downAfter, and waits
// until the sentinels know each other and the replica. It returns the
// master, the replica's port and the sentinels' addresses.
func startSentinels(t *testing.T, downAfter time.Duration) (master *redisServer, replicaPort int, sentinels []string) {
	t.Helper()
	dir := t.TempDir()
	pm, pr := freePort(t, false), freePort(t, false)
	base := "bind 127.0.0.1\nsave \"\"\nappendonly no\nmaxmemory-policy noeviction\n"
	master = startRedis(t, dir, "redis-master", pm, fmt.Sprintf("port %d\ndir %s\n%s", pm, dir, base), false)
	rdir := filepath.Join(dir, "replica")
	os.Mkdir(rdir, 0o700)
	replica := startRedis(t, rdir, "redis-replica", pr, fmt.Sprintf("port %d\ndir %s\n%sreplicaof 127.0.0.1 %d\n", pr, rdir, base, pm), false)
	waitReplicaSynced(t, replica.addr())
	for i := range 3 {
		ps := freePort(t, false)
		sdir := filepath.Join(dir, "sentinel"+strconv.Itoa(i))
		os.Mkdir(sdir, 0o700)
		startRedis(t, sdir, "sentinel"+strconv.Itoa(i), ps, fmt.Sprintf(
			"port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor mymaster 127.0.0.1 %d 2\nsentinel down-after-milliseconds mymaster %d\nsentinel failover-timeout mymaster 10000\n",
			ps, sdir, pm, downAfter.Milliseconds()), true)
		sentinels = append(sentinels, "127.0.0.1:"+strconv.Itoa(ps))
	}
	waitSentinels(t, sentinels)
	return master, pr, sentinels
}

// waitReplicaSynced waits until the replica at addr has its first copy of
// the master's data (a diskless sync starts 5 s after the replica asks):
// a master failed over before that hands its replica's empty data set
// over, and the test would measure a lost database, not a failover.
func waitReplicaSynced(t *testing.T, addr string) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		info, err := c.Info(context.Background(), "replication").Result()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("replica %s not in sync with its master after a minute: %v %s", addr, err, info)
		}
	}
}

// waitSentinels waits until every sentinel knows the replica and the two
// other sentinels: only then can they agree on a failover.
func waitSentinels(t *testing.T, addrs []string) {
	t.Helper()
	ctx := context.Background()
	for _, a := range addrs {
		sc := redis.NewSentinelClient(&redis.Options{Addr: a})
		defer sc.Close()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			reps, err1 := sc.Replicas(ctx, "mymaster").Result()
			sens, err2 := sc.Sentinels(ctx, "mymaster").Result()
			if err1 == nil && err2 == nil && len(reps) == 1 && len(sens) == len(addrs)-1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sentinel %s: after a minute knows %d replicas, %d sentinels (%v %v)", a, len(reps), len(sens), err1, err2)
			}
		}
	}
}

func sentinelMaster(t *testing.T, addr string) string {
	t.Helper()
	sc := redis.NewSentinelClient(&redis.Options{Addr: addr})
	defer sc.Close()
	hp, err := sc.GetMasterAddrByName(context.Background(), "mymaster").Result()
	if err != nil || len(hp) != 2 {
		t.Fatalf("sentinel %s: master address: %v %v", addr, hp, err)
	}
	return net.JoinHostPort(hp[0], hp[1])
}

// TestRedisCluster runs a full rotation with three worker processes on a
// three-master Redis Cluster: the report matches the simulator, and the
// fleet limiter holds its rate across the processes (no 429s from a
// quota twice the configured rate, which three per-process limiters at
// that rate would exceed).
func TestRedisCluster(t *testing.T) {
	needRedisBinaries(t)
	t.Parallel()
	url, rdb := startCluster(t)

	const rate = 5 // UpdateKeypair calls per second, fleet-wide
	f := startSim(t, cphsim.Options{Servers: 600, Seed: 29, JobLatency: 500 * time.Millisecond, JobJitter: 300 * time.Millisecond,
		UpdateKeypairQuota: 2 * rate, JobFailRate: 0.03})
	env := redisEnv(url, f)
	st := startRotation(t, env, "--chunk-size", "10", "--max-attempts", "5", writeTargets(t, f))
	if st.Chunks != 60 || st.Enqueued != 16 {
		t.Fatalf("start = %+v, want 60 chunks, the first 16 enqueued (the others as these are submitted)", st)
	}
	began := time.Now()
	var workers []*worker
	admin := freeAddr(t)
	for i := range 3 {
		args := []string{"--submit-rate", fmt.Sprintf("%d/s:1", rate)}
		if i == 0 { // one admin port: the web UI and /metrics on the cluster client
			args = append(args, "--admin-addr", admin, "--admin-token", adminToken)
		}
		workers = append(workers, startWorker(t, env, args...))
	}
	base := "http://" + admin
	waitHTTP(t, base+"/readyz")
	if code, body := get(t, base+"/monitoring/api/queues"); code != 200 || !strings.Contains(body, tasks.QueueSubmit) {
		t.Errorf("asynq web UI on the cluster: GET /monitoring/api/queues = %d %s", code, tail(body, 500))
	}
	rot := waitFinishedThrough(t, rdb, st.Rotation, 4*time.Minute)
	wall := time.Since(began)
	rows := report(t, env, st.Rotation)
	if len(rows) != 600 {
		t.Fatalf("report has %d rows, want 600", len(rows))
	}
	checkReport(t, f, rows, rot)
	for _, w := range workers {
		if logs := w.logs.String(); strings.Contains(logs, "CROSSSLOT") || strings.Contains(logs, "MOVED") {
			t.Errorf("worker %d logged a cluster error:\n%s", w.cmd.Process.Pid, tail(logs, 3000))
		}
	}
	if code, body := get(t, base+"/metrics"); code != 200 || !strings.Contains(body, "cph_rekey_servers_total") {
		t.Errorf("/metrics on the cluster: %d %s", code, tail(body, 500))
	}
	stats := f.sim.Stats()
	if n := stats.Throttled[cphsim.APIUpdateKeypair]; n != 0 {
		t.Errorf("%d UpdateKeypair 429s from a quota of %d/s: three workers together went past the fleet rate of %d/s", n, 2*rate, rate)
	}
	keys := map[string]int64{}
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		var mu sync.Mutex
		cc.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
			n, _ := c.DBSize(ctx).Result()
			mu.Lock()
			keys[c.Options().Addr] = n
			mu.Unlock()
			return nil
		})
	}
	t.Logf("Cluster: rotation %s %+v in %s with 3 workers; %d UpdateKeypair calls (%.1f/s over the run, fleet rate %d/s), 0 429s wanted, %d seen; keys per master %v",
		rot.ID, rot.Counts, wall.Round(100*time.Millisecond), stats.Calls[cphsim.APIUpdateKeypair],
		float64(stats.Calls[cphsim.APIUpdateKeypair])/wall.Seconds(), rate, stats.Throttled[cphsim.APIUpdateKeypair], keys)
}

// startCluster starts a three-master Redis Cluster for the test and
// returns its URL and a client.
func startCluster(t *testing.T) (string, redis.UniversalClient) {
	t.Helper()
	dir := t.TempDir()
	var addrs []string
	for i := range 3 {
		port := freePort(t, true)
		ndir := filepath.Join(dir, "node"+strconv.Itoa(i))
		os.Mkdir(ndir, 0o700)
		startRedis(t, ndir, "cluster-node"+strconv.Itoa(i), port, fmt.Sprintf(
			"port %d\nbind 127.0.0.1\ndir %s\ncluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 2000\nsave \"\"\nappendonly no\nmaxmemory-policy noeviction\n",
			port, ndir), false)
		addrs = append(addrs, "127.0.0.1:"+strconv.Itoa(port))
	}
	out, err := exec.Command("redis-cli", append(append([]string{"--cluster", "create"}, addrs...), "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput()
	if err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	url := "redis-cluster://" + strings.Join(addrs, ",")
	rdb := client(t, url, redisurl.Options{})
	waitClusterOK(t, addrs)
	return url, rdb
}

// TestRedisClusterNamespace runs a rotation in a namespace on a Redis
// Cluster with two worker processes: the namespace keeps the rotation's
// hash tags (no cross-slot script, no error), the report matches the
// simulator, and the asynq UI shows the namespaced queues.
func TestRedisClusterNamespace(t *testing.T) {
	needRedisBinaries(t)
	t.Parallel()
	url, rdb := startCluster(t)
	f := startSim(t, cphsim.Options{Servers: 300, Seed: 31, JobLatency: 300 * time.Millisecond, JobFailRate: 0.05})
	env := append(redisEnv(url, f), "REKEY_NAMESPACE=blue")
	st := startRotation(t, env, "--chunk-size", "20", writeTargets(t, f))
	admin := freeAddr(t)
	workers := []*worker{startWorker(t, env, "--admin-addr", admin, "--admin-token", adminToken), startWorker(t, env)}
	base := "http://" + admin
	waitHTTP(t, base+"/readyz")
	ns := tasks.Namespace("blue")
	if code, body := get(t, base+"/monitoring/api/queues"); code != 200 || !strings.Contains(body, ns.Queue(tasks.QueueSubmit)) {
		t.Errorf("asynq web UI on the cluster: GET /monitoring/api/queues = %d %s", code, tail(body, 500))
	}
	store := tasks.NewStore(rdb, ns)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		rot, err := store.Rotation(context.Background(), st.Rotation)
		if err != nil {
			t.Fatal(err)
		}
		if rot.Finished() {
			checkReport(t, f, report(t, env, st.Rotation), rot)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotation %s not finished after 2m: %+v", st.Rotation, rot.Counts)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for _, w := range workers {
		if logs := w.logs.String(); strings.Contains(logs, "CROSSSLOT") || strings.Contains(logs, "MOVED") || strings.Contains(logs, `"level":"ERROR"`) {
			t.Errorf("worker %d logged an error:\n%s", w.cmd.Process.Pid, tail(logs, 3000))
		}
	}
	if _, err := tasks.NewStore(rdb, "").Rotation(context.Background(), st.Rotation); err == nil {
		t.Errorf("the default namespace sees rotation %s of namespace blue", st.Rotation)
	}
}

func waitClusterOK(t *testing.T, addrs []string) {
	t.Helper()
	for _, a := range addrs {
		c := redis.NewClient(&redis.Options{Addr: a})
		defer c.Close()
		for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
			info, err := c.ClusterInfo(context.Background()).Result()
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("cluster node %s not ok after a minute: %v %s", a, err, info)
			}
		}
	}
}

// TestRedisTLS runs a rotation over rediss:// against a redis-server that
// requires TLS with client certificates and an ACL user, with a CA the
// test makes; a client without the CA is refused.
func TestRedisTLS(t *testing.T) {
	needRedisBinaries(t)
	t.Parallel()
	dir := t.TempDir()
	ca, srvCert, srvKey, cliCert, cliKey := makeTestPKI(t, dir)
	port := freePort(t, false)
	tlsSrv := newRedis(t, dir, "redis-tls", port, fmt.Sprintf(
		"port 0\ntls-port %d\nbind 127.0.0.1\ndir %s\ntls-cert-file %s\ntls-key-file %s\ntls-ca-cert-file %s\ntls-auth-clients yes\n"+
			"save \"\"\nappendonly no\nuser default off\nuser rekey on >tls-test-pw ~* &* +@all\n",
		port, dir, srvCert, srvKey, ca), false)
	if err := tlsSrv.tryStart(); err != nil {
		if strings.Contains(err.Error(), "TLS") || strings.Contains(err.Error(), "tls") {
			t.Skipf("SKIP %s: this redis-server cannot serve TLS (a build without BUILD_TLS=yes): %v", t.Name(), err)
		}
		t.Fatal(err)
	}
	url := "rediss://127.0.0.1:" + strconv.Itoa(port) + "/0"
	creds := []string{"REKEY_REDIS_CA=" + ca, "REKEY_REDIS_CERT=" + cliCert, "REKEY_REDIS_KEY=" + cliKey,
		"REKEY_REDIS_USERNAME=rekey", "REKEY_REDIS_PASSWORD=tls-test-pw"}
	rdb := client(t, url, redisurl.Options{CAFile: ca, CertFile: cliCert, KeyFile: cliKey, Username: "rekey", Password: "tls-test-pw"})
	if err := rdb.Ping(context.Background()).Err(); err != nil {
		t.Fatalf("ping over TLS: %v (does this redis-server build have TLS? redis-server --tls-port needs it)", err)
	}

	f := startSim(t, cphsim.Options{Servers: 300, Seed: 31, JobLatency: 300 * time.Millisecond})
	env := redisEnv(url, f, creds...)
	if _, code, stderr := enqueueCode(t, redisEnv(url, f), "list"); code == 0 || !strings.Contains(stderr, "certificate") {
		t.Errorf("enqueue list without the CA: exit %d, stderr %q: want a certificate error", code, stderr)
	}
	if _, code, stderr := enqueueCode(t, redisEnv(url, f, creds[:3]...), "list"); code == 0 || !strings.Contains(stderr, "NOAUTH") && !strings.Contains(stderr, "WRONGPASS") && !strings.Contains(stderr, "auth") {
		t.Errorf("enqueue list without the ACL user: exit %d, stderr %q: want an authentication error", code, stderr)
	}
	st := startRotation(t, env, writeTargets(t, f))
	startWorker(t, env)
	rot := waitFinishedThrough(t, rdb, st.Rotation, 3*time.Minute)
	rows := report(t, env, st.Rotation)
	if len(rows) != 300 || rot.State != tasks.StateSucceeded {
		t.Fatalf("report has %d rows, state %s: want 300 servers succeeded", len(rows), rot.State)
	}
	checkReport(t, f, rows, rot)
	t.Logf("TLS: rotation %s over rediss:// with a client certificate and ACL user: %+v", rot.ID, rot.Counts)
}

// makeTestPKI writes a CA, a server certificate for 127.0.0.1 and a client
// certificate, all made here with crypto/x509.
func makeTestPKI(t *testing.T, dir string) (ca, srvCert, srvKey, cliCert, cliKey string) {
	t.Helper()
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cph-rekey test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	ca = write("ca.pem", "CERTIFICATE", caDER)
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) (string, string) {
		k := newKey()
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.IPAddresses, tmpl.DNSNames = []net.IP{net.IPv4(127, 0, 0, 1)}, []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kder, err := x509.MarshalECPrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kder)
	}
	srvCert, srvKey = leaf(2, "server", x509.ExtKeyUsageServerAuth)
	cliCert, cliKey = leaf(3, "client", x509.ExtKeyUsageClientAuth)
	return ca, srvCert, srvKey, cliCert, cliKey
}
