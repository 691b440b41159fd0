package e2e

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// BenchmarkScale is the DESIGN's Scale and Cost benchmark, on the real
// Redis (CPH_REKEY_TEST_REDIS): for 10k and 1M servers it reports the time
// `enqueue start` takes, Redis memory per server once enqueued, and the
// worker's RSS after it has worked on the rotation for a while (20 s at
// 1M); for the 10k rotation, which it runs to the end, API calls, Redis
// commands and Redis memory per server once every outcome is recorded.
//
//	CPH_REKEY_TEST_REDIS=127.0.0.1:6379 go test -run '^$' -bench Scale -benchtime 1x ./e2e
func BenchmarkScale(b *testing.B) {
	for _, n := range []int{10_000, 1_000_000} {
		b.Run(fmt.Sprintf("servers=%d", n), func(b *testing.B) {
			for b.Loop() {
				scaleRun(b, n)
			}
		})
	}
}

func scaleRun(b *testing.B, n int) {
	r := testredis.Real(b)
	f := startSim(b, cphsim.Options{Servers: n, Seed: 1, JobLatency: 500 * time.Millisecond})
	env := baseEnv(r, f)
	rdb := r.Client(b)
	ctx := context.Background()
	before := usedMemory(b, rdb)
	calls0 := redisCalls(b, rdb)
	start := time.Now()
	// enqueue's defaults (the plan reads the fleet, verification on) but for
	// the pace of its reads: the simulator here has no read quota.
	out := enqueue(b, env, "start", "--keypair", newKeypair, "--read-rate", "2000/s:100", writeTargets(b, f))
	enqueueTime := time.Since(start)
	id := strings.TrimSpace(out)
	perServer := float64(usedMemory(b, rdb)-before) / float64(n)

	w := startWorker(b, env, "--submit-rate", "50/s", "--poll-rate", "100/s", "--read-rate", "100/s", "--concurrency", "20")
	store := tasks.NewStore(rdb, "")
	deadline := time.Now().Add(20 * time.Second)
	if n <= 10_000 {
		deadline = time.Now().Add(5 * time.Minute)
	}
	var rot *tasks.Rotation
	for time.Now().Before(deadline) {
		var err error
		if rot, err = store.Rotation(ctx, id); err != nil {
			b.Fatal(err)
		}
		if rot.Finished() {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	rss := rssKiB(b, w.cmd.Process.Pid)
	b.ReportMetric(enqueueTime.Seconds(), "enqueue-s")
	b.ReportMetric(perServer, "redis-B/server")
	b.ReportMetric(float64(rss)/1024, "worker-RSS-MiB")
	b.ReportMetric(float64(rot.Counts.Done()), "servers-done")
	if rot.Finished() {
		st := f.sim.Stats()
		api := 0
		for _, n := range st.Calls {
			api += n
		}
		b.ReportMetric(float64(api)/float64(n), "api-calls/server")
		b.ReportMetric(float64(redisCalls(b, rdb)-calls0)/float64(n), "redis-cmds/server")
		b.ReportMetric(float64(usedMemory(b, rdb)-before)/float64(n), "redis-B/server-finished")
	}
}

func usedMemory(b *testing.B, rdb *redis.Client) int64 {
	b.Helper()
	return infoField(b, rdb, "memory", "used_memory")
}

// redisCalls sums the calls of every command since the server started.
func redisCalls(b *testing.B, rdb *redis.Client) int64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), "commandstats").Result()
	if err != nil {
		b.Fatal(err)
	}
	var total int64
	for line := range strings.Lines(info) {
		_, rest, ok := strings.Cut(line, ":calls=")
		if !ok {
			continue
		}
		v, _, _ := strings.Cut(rest, ",")
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
	}
	return total
}

func infoField(b *testing.B, rdb *redis.Client, section, field string) int64 {
	b.Helper()
	info, err := rdb.Info(context.Background(), section).Result()
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), field+":"); ok {
			n, _ := strconv.ParseInt(v, 10, 64)
			return n
		}
	}
	b.Fatalf("INFO %s has no %s", section, field)
	return 0
}

func rssKiB(b *testing.B, pid int) int64 {
	b.Helper()
	fh, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	defer fh.Close()
	sc := bufio.NewScanner(fh)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	b.Fatal("no VmRSS")
	return 0
}
