package e2e

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

const adminToken = "e2e-admin-token"

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// get fetches an admin URL with the admin token.
func get(t *testing.T, url string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitHTTP(t *testing.T, url string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		if code, _ := get(t, url); code == http.StatusOK {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not up after 20s", url)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

var succeededRe = regexp.MustCompile(`(?m)^cph_rekey_servers_total\{outcome="succeeded"\} (\S+)$`)

func succeededMetric(t *testing.T, body string) float64 {
	t.Helper()
	m := succeededRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no cph_rekey_servers_total{outcome=\"succeeded\"} in /metrics")
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestOperating runs a rotation with the admin port on: the product's
// metrics move while it runs, the probes answer, and neither the AK nor the
// SK appears in logs, task payloads, Redis, the web UI's API or /metrics.
func TestOperating(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 600, Seed: 5, JobLatency: time.Second, JobJitter: 500 * time.Millisecond,
		UpdateKeypairQuota: 4, JobFailRate: 0.05})
	env := baseEnv(r, f)
	addr := freeAddr(t)
	w := startWorker(t, append(env, "REKEY_ADMIN_TOKEN="+adminToken), "--admin-addr", addr, "--submit-rate", "4/s")
	base := "http://" + addr
	waitHTTP(t, base+"/readyz")
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/metrics without the token = %d, want 401", resp.StatusCode)
	}

	st := startRotation(t, env, "--chunk-size", "20", writeTargets(t, f))
	var first float64 = -1
	var pages []string
	rdb := r.Client(t)
	store := tasks.NewStore(rdb, "")
	for moved := false; !moved; {
		_, body := get(t, base+"/metrics")
		v := succeededMetric(t, body)
		if first < 0 && v > 0 {
			first = v
		}
		rot, err := store.Rotation(context.Background(), st.Rotation)
		if err != nil {
			t.Fatal(err)
		}
		if first > 0 && v > first {
			moved = true
			pages = append(pages, body)
			t.Logf("cph_rekey_servers_total{outcome=succeeded} moved %v → %v during the run", first, v)
		}
		if rot.Finished() && !moved {
			t.Fatalf("the rotation finished before /metrics showed progress twice (first %v, last %v)", first, v)
		}
		time.Sleep(300 * time.Millisecond)
	}
	for _, q := range []string{tasks.QueueSubmit, tasks.QueuePoll} {
		for _, state := range []string{"pending_tasks", "scheduled_tasks", "retry_tasks", "active_tasks", "archived_tasks"} {
			code, body := get(t, fmt.Sprintf("%s/monitoring/api/queues/%s/%s", base, q, state))
			if code != http.StatusOK {
				t.Fatalf("UI API %s/%s = %d", q, state, code)
			}
			pages = append(pages, body)
		}
	}
	_, queues := get(t, base+"/monitoring/api/queues")
	pages = append(pages, queues)
	rot := waitFinished(t, rdb, st.Rotation, 3*time.Minute)
	_, body := get(t, base+"/metrics")
	for _, name := range []string{"cph_rekey_api_requests_total", "cph_rekey_api_request_duration_seconds", "cph_rekey_limiter_wait_seconds",
		"cph_rekey_poll_rounds_total", "cph_rekey_servers_submitted_total", "asynq_queue_size"} {
		if !strings.Contains(body, name) {
			t.Errorf("/metrics has no %s", name)
		}
	}
	pages = append(pages, body, enqueue(t, env, "report", st.Rotation), enqueue(t, env, "status", "--json", st.Rotation))
	checkReport(t, f, report(t, env, st.Rotation), rot)

	w.cmd.Process.Signal(syscall.SIGTERM)
	if err := w.wait(); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v", err)
	}
	pages = append(pages, w.logs.String(), redisDump(t, rdb))
	for i, p := range pages {
		for _, secret := range []string{testAK, testSK} {
			if strings.Contains(p, secret) {
				t.Fatalf("secret %.4s… found in output %d:\n%s", secret, i, tail(p, 500))
			}
		}
	}
	if !strings.Contains(w.logs.String(), `"rotation":"`+st.Rotation+`"`) {
		t.Errorf("worker logs carry no rotation attribute")
	}
}

// redisDump renders every key and value in Redis as text.
func redisDump(t *testing.T, rdb *redis.Client) string {
	t.Helper()
	ctx := context.Background()
	var b strings.Builder
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		b.WriteString(k + " = ")
		switch rdb.Type(ctx, k).Val() {
		case "string":
			b.WriteString(rdb.Get(ctx, k).Val())
		case "hash":
			fmt.Fprint(&b, rdb.HGetAll(ctx, k).Val())
		case "list":
			fmt.Fprint(&b, rdb.LRange(ctx, k, 0, -1).Val())
		case "set":
			fmt.Fprint(&b, rdb.SMembers(ctx, k).Val())
		case "zset":
			fmt.Fprint(&b, rdb.ZRangeWithScores(ctx, k, 0, -1).Val())
		}
		b.WriteByte('\n')
	}
	if len(keys) == 0 {
		t.Fatal("Redis is empty: nothing was checked")
	}
	return b.String()
}

// TestSIGTERMLosesNothing stops a busy worker with SIGTERM: it exits
// cleanly within its shutdown timeout, a second worker finishes the
// rotation, every server is accounted for and no task counted as failed.
func TestSIGTERMLosesNothing(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 800, Seed: 9, JobLatency: 1500 * time.Millisecond, UpdateKeypairQuota: 8})
	env := baseEnv(r, f)
	st := startRotation(t, env, "--chunk-size", "20", writeTargets(t, f))
	a := startWorker(t, env, "--submit-rate", "8/s")
	rdb := r.Client(t)
	waitSubmitted(t, rdb, st.Rotation, 200)
	sent := time.Now()
	a.cmd.Process.Signal(syscall.SIGTERM)
	if err := a.wait(); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v\n%s", err, tail(a.logs.String(), 2000))
	}
	t.Logf("worker stopped %s after SIGTERM", time.Since(sent).Round(time.Millisecond))
	startWorker(t, env, "--submit-rate", "8/s")
	rot := waitFinished(t, rdb, st.Rotation, 3*time.Minute)
	checkReport(t, f, report(t, env, st.Rotation), rot)
	if rot.Counts.Resubmitted != 0 {
		t.Errorf("%d chunks were resubmitted after a graceful stop", rot.Counts.Resubmitted)
	}
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for _, q := range []string{tasks.QueueSubmit, tasks.QueuePoll} {
		info, err := insp.GetQueueInfo(q)
		if err != nil {
			t.Fatal(err)
		}
		if info.FailedTotal != 0 || info.Archived != 0 {
			t.Errorf("queue %s: %d failed, %d archived tasks after a graceful stop", q, info.FailedTotal, info.Archived)
		}
	}
}
