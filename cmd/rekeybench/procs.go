package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// The simulator's credentials: made up, known to nothing else.
const (
	benchAK      = "BENCHACCESSKEY000000"
	benchSK      = "bench-secret-key-not-a-real-one"
	benchProject = "0123456789abcdef0123456789abcdef"
	benchKeypair = "kp-bench"
)

const modulePath = "github.com/cph-rekey/cph-rekey"

// bench holds what every run shares: the binaries, the Redis, the logs.
type bench struct {
	c      *config
	bins   map[string]string // command name → binary path
	tmp    string            // built binaries and target files
	logDir string
	rdb    redis.UniversalClient
	http   *http.Client
	cpus   int
	stderr io.Writer
	runs   int // runs so far, naming their log files
	// release gives back the lease on the database (nil: none taken).
	release func()
}

func newBench(ctx context.Context, c *config, stderr io.Writer) (*bench, error) {
	conn, err := c.redis.Conn()
	if err != nil {
		return nil, err
	}
	b := &bench{c: c, bins: map[string]string{}, rdb: conn.Client(), http: &http.Client{Timeout: 10 * time.Second},
		cpus: runtime.GOMAXPROCS(0), stderr: stderr}
	if err := b.rdb.Ping(ctx).Err(); err != nil {
		b.rdb.Close()
		return nil, fmt.Errorf("redis %s: %w", c.redisURL, err)
	}
	if err := b.lease(ctx); err != nil {
		b.rdb.Close()
		return nil, err
	}
	if b.tmp, err = os.MkdirTemp("", "rekeybench-"); err != nil {
		b.close()
		return nil, err
	}
	b.logDir = filepath.Join(b.tmp, "logs")
	if err := os.Mkdir(b.logDir, 0o700); err != nil {
		b.close()
		return nil, err
	}
	for _, name := range []string{"worker", "enqueue", "cphsim"} {
		if c.binDir != "" {
			p := filepath.Join(c.binDir, name)
			if fi, err := os.Stat(p); err != nil || fi.IsDir() || fi.Mode()&0o111 == 0 {
				b.close()
				return nil, fmt.Errorf("--bin-dir %s: no executable %s", c.binDir, name)
			}
			b.bins[name] = p
			continue
		}
		p := filepath.Join(b.tmp, name)
		fmt.Fprintf(stderr, "building %s…\n", name)
		out, err := exec.CommandContext(ctx, "go", "build", "-o", p, modulePath+"/cmd/"+name).CombinedOutput()
		if err != nil {
			b.close()
			return nil, fmt.Errorf("build %s (run rekeybench inside the cph-rekey module, or give --bin-dir): %v\n%s", name, err, out)
		}
		b.bins[name] = p
	}
	return b, nil
}

// lease takes the test suite's lease on the bench's database: the tests
// (internal/testredis) lease databases 1-15 of a real Redis with a key in
// database 0, and the bench flushes its database before every run, so
// neither may use it while the other does.
func (b *bench) lease(ctx context.Context) error {
	c, ok := b.rdb.(*redis.Client)
	if !ok || c.Options().DB < 1 || c.Options().DB > 15 {
		return nil
	}
	opt := *c.Options()
	db := opt.DB
	opt.DB = 0
	admin := redis.NewClient(&opt)
	key := "cph-rekey-test-lease:" + strconv.Itoa(db)
	got, err := admin.SetNX(ctx, key, fmt.Sprintf("rekeybench pid %d", os.Getpid()), 6*time.Hour).Result()
	if err != nil || !got {
		admin.Close()
		if err == nil {
			err = fmt.Errorf("database %d is leased by a test run (key %s in database 0): wait for it to end, or give --redis another database", db, key)
		}
		return fmt.Errorf("lease database %d: %w", db, err)
	}
	b.release = func() {
		admin.Del(context.Background(), key)
		admin.Close()
	}
	return nil
}

func (b *bench) close() {
	if b.release != nil {
		b.release()
	}
	b.rdb.Close()
	if b.c.keep {
		fmt.Fprintf(b.stderr, "logs kept in %s\n", b.logDir)
		return
	}
	os.RemoveAll(b.tmp)
}

// proc is a child process whose output goes to a log file.
type proc struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// start starts a binary with its output in a log file named after the run.
// stdout, if set, receives its standard output instead.
func (b *bench) start(name, bin string, args, env []string, stdout io.Writer) (*proc, error) {
	logf, err := os.Create(filepath.Join(b.logDir, fmt.Sprintf("run%02d-%s.log", b.runs, name)))
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(b.bins[bin], args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	if stdout != nil {
		cmd.Stdout = stdout
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// stop sends SIGTERM, and SIGKILL if the process is still there after grace.
func (p *proc) stop(grace time.Duration) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// exited reports an early exit of the process.
func (p *proc) exited() error {
	select {
	case <-p.done:
		return fmt.Errorf("%s exited: %v", p.name, p.err)
	default:
		return nil
	}
}

// sim is a running cphsim process.
type sim struct {
	*proc
	url string
}

// startSim starts the simulator with n servers, quota q for every API, a
// share failRate of jobs failing transiently, churn and every API answer
// waiting lat, and reads its URL from its first stdout line.
func (b *bench) startSim(ctx context.Context, n int, q, failRate float64, churn [2]float64, lat latency) (*sim, error) {
	return b.startSimOf(ctx, benchProject, 1, n, q, failRate, churn, lat)
}

// startSimOf is startSim for project, its fleet drawn from seed.
func (b *bench) startSimOf(ctx context.Context, project string, seed uint64, n int, q, failRate float64, churn [2]float64, lat latency) (*sim, error) {
	args := []string{"--ak", benchAK, "--sk", benchSK, "--project-id", project,
		"--servers", strconv.Itoa(n), "--quota-update", fmt.Sprint(q), "--quota-list", fmt.Sprint(q), "--quota-read", fmt.Sprint(q),
		"--fail-rate", fmt.Sprint(failRate), "--create-rate", fmt.Sprint(churn[0]), "--delete-rate", fmt.Sprint(churn[1]),
		"--job-latency", b.c.jobLatency.String(), "--job-jitter", b.c.jobJitter.String(),
		"--latency", lat.mean.String(), "--latency-jitter", lat.jitter.String(), "--seed", strconv.FormatUint(seed, 10)}
	args = append(args, b.c.adaptive.simArgs()...)
	pr, pw := io.Pipe()
	p, err := b.start("cphsim", "cphsim", args, os.Environ(), pw)
	if err != nil {
		return nil, err
	}
	go func() {
		<-p.done
		pw.Close()
	}()
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		if sc.Scan() {
			urls <- strings.TrimSpace(sc.Text())
		}
		close(urls)
		io.Copy(io.Discard, pr)
	}()
	select {
	case u, ok := <-urls:
		if !ok || !strings.HasPrefix(u, "http://") {
			p.stop(time.Second)
			return nil, fmt.Errorf("cphsim did not print its URL (got %q); see its log with --keep", u)
		}
		return &sim{proc: p, url: u}, nil
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	p.stop(time.Second)
	return nil, fmt.Errorf("cphsim did not start within 30s: %w", context.Cause(ctx))
}

// call sends a request to a /_sim path of the simulator and decodes a JSON
// answer into v, if v is not nil.
func (b *bench) call(ctx context.Context, method, url string, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return err
	}
	resp, err := b.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s %s: %s: %s", method, url, resp.Status, body)
	}
	if v == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("%s %s: %w", method, url, err)
	}
	return nil
}

func (s *sim) stats(ctx context.Context, b *bench) (cphsim.Stats, error) {
	var st cphsim.Stats
	err := b.call(ctx, http.MethodGet, s.url+"/_sim/stats", &st)
	return st, err
}

// servers returns every simulated server's state, keyed by id, in order.
func (s *sim) servers(ctx context.Context, b *bench) ([]cphsim.ServerState, error) {
	var body struct {
		Servers []cphsim.ServerState `json:"servers"`
	}
	if err := b.call(ctx, http.MethodGet, s.url+"/_sim/servers", &body); err != nil {
		return nil, err
	}
	return body.Servers, nil
}

// deleted returns the servers the simulator's churn deleted.
func (s *sim) deleted(ctx context.Context, b *bench) ([]string, error) {
	var body struct {
		ServerIDs []string `json:"server_ids"`
	}
	err := b.call(ctx, http.MethodGet, s.url+"/_sim/deleted", &body)
	return body.ServerIDs, err
}

// setQuota changes a quota of the running simulator.
func (s *sim) setQuota(ctx context.Context, b *bench, api cphsim.API, rate float64) error {
	url := fmt.Sprintf("%s/_sim/quota?api=%s&rate=%s", s.url, api, strconv.FormatFloat(rate, 'f', -1, 64))
	return b.call(ctx, http.MethodPut, url, nil)
}

// env is the environment of the worker and enqueue processes.
func (b *bench) env(simURL string) []string {
	return append(os.Environ(),
		"REDIS_URL="+b.c.redisURL,
		"REKEY_REDIS_CA="+b.c.redis.CAFile,
		"REKEY_REDIS_CERT="+b.c.redis.CertFile,
		"REKEY_REDIS_KEY="+b.c.redis.KeyFile,
		"REKEY_REDIS_USERNAME="+b.c.redis.Username,
		"REKEY_REDIS_PASSWORD="+b.c.redis.Password,
		"REKEY_ENDPOINT="+simURL,
		"REKEY_NAMESPACE="+string(b.c.namespace),
		"HUAWEICLOUD_SDK_AK="+benchAK,
		"HUAWEICLOUD_SDK_SK="+benchSK,
		"HUAWEICLOUD_SDK_PROJECT_ID="+benchProject,
	)
}

// startWorkers starts n worker processes with the given limiter and rates
// (and the worker's defaults for the rest), and waits until all of them
// have registered with asynq.
func (b *bench) startWorkers(ctx context.Context, n int, env []string, limiter, submitRate, pollRate, readRate string) ([]*proc, error) {
	var ws []*proc
	for i := range n {
		args := []string{"--admin-addr", "", "--log-format", "json", "--log-level", cmp.Or(os.Getenv("REKEYBENCH_LOG_LEVEL"), "warn"),
			"--concurrency", strconv.Itoa(b.c.concurrency), "--limiter", limiter,
			"--submit-rate", submitRate, "--poll-rate", pollRate, "--read-rate", readRate, "--shutdown-timeout", "5s"}
		if b.c.firstPoll > 0 {
			args = append(args, "--first-poll", b.c.firstPoll.String())
		}
		if b.c.pollCap > 0 {
			args = append(args, "--poll-cap", b.c.pollCap.String())
		}
		w, err := b.start(fmt.Sprintf("worker%02d", i), "worker", args, env, nil)
		if err != nil {
			stopAll(ws)
			return nil, err
		}
		ws = append(ws, w)
	}
	insp := asynq.NewInspectorFromRedisClient(b.rdb)
	deadline := time.Now().Add(60 * time.Second)
	for {
		for _, w := range ws {
			if err := w.exited(); err != nil {
				stopAll(ws)
				return nil, fmt.Errorf("%w (see its log with --keep)", err)
			}
		}
		infos, err := insp.Servers()
		if err == nil && len(infos) >= n {
			return ws, nil
		}
		if time.Now().After(deadline) {
			stopAll(ws)
			return nil, fmt.Errorf("%d worker processes did not all register with asynq within 60s (%d did; last error %v)", n, len(infos), err)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			stopAll(ws)
			return nil, err
		}
	}
}

// peakRSS is the most memory the process has held (VmHWM), in bytes, or
// 0 where /proc cannot tell.
func (p *proc) peakRSS() int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// stopAll stops processes in parallel; each gets its shutdown grace.
func stopAll(ps []*proc) {
	done := make(chan struct{}, len(ps))
	for _, p := range ps {
		go func() {
			p.stop(10 * time.Second)
			done <- struct{}{}
		}()
	}
	for range ps {
		<-done
	}
}

// enqueueStart runs `enqueue start` over the target file, at enqueue's
// defaults but for --chunk-size (when set) and extra, and returns the
// rotation id. Its reads of the fleet count as the run's calls.
func (b *bench) enqueueStart(ctx context.Context, env []string, file string, extra ...string) (string, error) {
	args := []string{"start", "--json", "--keypair", benchKeypair}
	if b.c.chunkSize != tasks.DefaultChunkSize {
		args = append(args, "--chunk-size", strconv.Itoa(b.c.chunkSize))
	}
	cmd := exec.CommandContext(ctx, b.bins["enqueue"], append(append(args, extra...), file)...)
	cmd.Env = env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("enqueue start: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	var st struct {
		Rotation string `json:"rotation"`
	}
	if err := json.Unmarshal(out, &st); err != nil || st.Rotation == "" {
		return "", fmt.Errorf("enqueue start printed %q: want JSON with a rotation id", out)
	}
	return st.Rotation, nil
}

// writeTargets writes the simulator's server ids, one a line.
func (b *bench) writeTargets(servers []cphsim.ServerState) (string, error) {
	var sb strings.Builder
	for _, s := range servers {
		sb.WriteString(s.ServerID)
		sb.WriteByte('\n')
	}
	p := filepath.Join(b.tmp, fmt.Sprintf("run%02d-targets.txt", b.runs))
	return p, os.WriteFile(p, []byte(sb.String()), 0o600)
}

// sleep waits d or until ctx is done.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Values of the worker's --limiter.
const (
	limiterFleet = "fleet"
	limiterLocal = "local"
)

// flush empties the bench's database: on a cluster, every master's.
func (b *bench) flush(ctx context.Context) error {
	if cc, ok := b.rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error { return c.FlushDB(ctx).Err() })
	}
	return b.rdb.FlushDB(ctx).Err()
}
