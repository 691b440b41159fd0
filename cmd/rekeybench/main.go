// Command rekeybench measures how well cph-rekey uses a CPH API quota: the
// Quota, quota-halving and scale-out scenarios of issue 4. It runs the real
// worker, enqueue and cphsim binaries as processes against a real Redis and
// prints one Markdown table per scenario:
//
//	go run ./cmd/rekeybench --scenario all
//	go run ./cmd/rekeybench --scenario quota --servers 20000 --quota 20
//
// Every run is checked as well as timed: the rotation must finish with every
// server succeeded, and the report must agree with the simulator server by
// server, so a fast but wrong run fails the benchmark (exit 1).
//
// The Redis database given with --redis is FLUSHDB'ed before every run.
// Exit codes: 0 ok, 1 a run failed or was wrong, 2 bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/envflag"
	"github.com/cph-rekey/cph-rekey/internal/redisurl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// config is the parsed command line.
type config struct {
	scenarios   []string
	servers     int
	seqServers  int
	quota       int
	submitBurst int
	pollBurst   int
	workers     int
	scale       []int
	chunkSize   int
	concurrency int
	jobLatency  time.Duration
	jobJitter   time.Duration
	firstPoll   time.Duration
	pollCap     time.Duration
	halveAt     float64
	sample      time.Duration
	runTimeout  time.Duration
	redisURL    string
	redis       *redisurl.Flags
	binDir      string
	keep        bool
}

var scenarioNames = []string{"quota", "halve", "scale"}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := envflag.New("rekeybench", "REKEY_BENCH_")
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rekeybench [flags]\n\n"+
			"Runs cph-rekey's quota benchmarks (issue 4) with the real worker, enqueue and cphsim binaries\n"+
			"against a real Redis, and prints one Markdown table per scenario:\n"+
			"  quota  cph-rekey (fleet limiter at Q) vs a sequential client and 4 workers with local limiters at Q and Q/4\n"+
			"  halve  the simulator's UpdateKeypair quota halves mid-run: how long until 429s stop, quota use after\n"+
			"  scale  1, 4 and 16 worker processes at the same Q\n\n"+
			"WARNING: every run FLUSHDBs the Redis database given with --redis (default DB 13).\n"+
			"The bench deliberately does not read REDIS_URL, so it cannot flush a Redis meant for something else.\n\n"+
			"Every flag also reads the environment variable shown. Exit codes: 0 ok, 1 a run failed or was wrong, 2 bad flags.\n\nFlags:\n")
		fs.PrintUsage(stderr)
	}
	scenario := fs.String("scenario", "all", "`scenarios` to run: all, or a comma-separated list of quota, halve, scale")
	fs.IntVar(&c.servers, "servers", 20000, "fleet size of every cph-rekey run")
	fs.IntVar(&c.seqServers, "seq-servers", 1000, "fleet size of the sequential baseline, extrapolated to --servers (it takes ~2.5 s a chunk)")
	fs.IntVar(&c.quota, "quota", 20, "the simulator's quota Q, requests/s for UpdateKeypair and for ListJobs each")
	fs.IntVar(&c.submitBurst, "submit-burst", 0, "burst of the fleet limiter's UpdateKeypair rate (worker --submit-rate Q/s:N); 0: the worker's default, Q")
	fs.IntVar(&c.pollBurst, "poll-burst", 0, "burst of the fleet limiter's ListJobs rate (worker --poll-rate Q/s:N); 0: Q")
	fs.IntVar(&c.workers, "workers", 4, "worker processes of the quota and halve scenarios")
	scale := fs.String("scale", "1,4,16", "worker process `counts` of the scale scenario")
	fs.IntVar(&c.chunkSize, "chunk-size", 100, "servers per UpdateKeypair call (1-100)")
	fs.IntVar(&c.concurrency, "concurrency", 20, "--concurrency of every worker process")
	fs.DurationVar(&c.jobLatency, "job-latency", 2*time.Second, "the simulator's job latency")
	fs.DurationVar(&c.jobJitter, "job-jitter", 0, "the simulator's job latency spread (latency ± jitter)")
	fs.DurationVar(&c.firstPoll, "first-poll", 2500*time.Millisecond, "--first-poll of the workers (and the sequential client's first poll)")
	fs.DurationVar(&c.pollCap, "poll-cap", 5*time.Second, "--poll-cap of the workers")
	fs.Float64Var(&c.halveAt, "halve-at", 0.3, "halve scenario: halve the quota when this `fraction` of the chunks is submitted")
	fs.DurationVar(&c.sample, "sample", 100*time.Millisecond, "how often the simulator's /_sim/stats is sampled")
	fs.DurationVar(&c.runTimeout, "run-timeout", 5*time.Minute, "give up on a run after this long")
	c.redis = redisurl.AddFlags(fs, "redis://127.0.0.1:6379/13", "Redis `url` of a database the bench may FLUSHDB before every run (every mode of REDIS_URL; a cluster is flushed on every master)")
	fs.Env("redis", "REKEY_BENCH_REDIS") // never REDIS_URL
	fs.StringVar(&c.binDir, "bin-dir", "", "take the worker, enqueue and cphsim binaries from this `dir` instead of building them")
	fs.BoolVar(&c.keep, "keep", false, "keep the processes' logs (their directory is printed)")
	if err := fs.Parse(args, getenv); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var err error
	if c.scenarios, err = parseScenarios(*scenario); err != nil {
		return nil, fmt.Errorf("--scenario: %w", err)
	}
	if c.scale, err = parseCounts(*scale); err != nil {
		return nil, fmt.Errorf("--scale: %w", err)
	}
	for _, r := range []struct {
		name   string
		v      int
		lo, hi int
	}{
		{"servers", c.servers, 1, 1_000_000}, {"seq-servers", c.seqServers, 1, 1_000_000},
		{"quota", c.quota, 1, 10_000}, {"submit-burst", c.submitBurst, 0, 10_000}, {"poll-burst", c.pollBurst, 0, 10_000}, {"workers", c.workers, 1, 64},
		{"chunk-size", c.chunkSize, 1, 100}, {"concurrency", c.concurrency, 1, 10_000},
	} {
		if r.v < r.lo || r.v > r.hi {
			return nil, fmt.Errorf("--%s %d: want %d-%d", r.name, r.v, r.lo, r.hi)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"job-latency", c.jobLatency}, {"first-poll", c.firstPoll}, {"poll-cap", c.pollCap}, {"sample", c.sample}, {"run-timeout", c.runTimeout}} {
		if d.v <= 0 {
			return nil, fmt.Errorf("--%s %s: want a positive duration", d.name, d.v)
		}
	}
	if c.jobJitter < 0 || c.jobJitter > c.jobLatency {
		return nil, fmt.Errorf("--job-jitter %s: want 0 to --job-latency (%s)", c.jobJitter, c.jobLatency)
	}
	if !(c.halveAt > 0 && c.halveAt < 1) {
		return nil, fmt.Errorf("--halve-at %v: want a fraction in (0, 1)", c.halveAt)
	}
	if c.quota < 2 && c.wants("halve") {
		return nil, fmt.Errorf("--quota %d: the halve scenario needs at least 2", c.quota)
	}
	if c.redisURL = c.redis.URL; c.redisURL == "" {
		return nil, errors.New("--redis: empty URL")
	}
	return c, nil
}

func parseScenarios(s string) ([]string, error) {
	if s == "all" {
		return scenarioNames, nil
	}
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		known := false
		for _, n := range scenarioNames {
			known = known || n == name
		}
		if !known {
			return nil, fmt.Errorf("unknown scenario %q: want all or a list of %s", name, strings.Join(scenarioNames, ", "))
		}
		out = append(out, name)
	}
	return out, nil
}

func parseCounts(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 64 {
			return nil, fmt.Errorf("%q: want comma-separated process counts of 1-64", f)
		}
		out = append(out, n)
	}
	return out, nil
}

func (c *config) wants(scenario string) bool {
	for _, s := range c.scenarios {
		if s == scenario {
			return true
		}
	}
	return false
}

// run runs the chosen scenarios and returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c, err := parseConfig(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "rekeybench: %v\n", err)
		return exitUsage
	}
	b, err := newBench(ctx, c, stderr)
	if err != nil {
		fmt.Fprintf(stderr, "rekeybench: %v\n", err)
		return exitFailure
	}
	defer b.close()
	fmt.Fprintf(stdout, "rekeybench %s, GOMAXPROCS %d, Redis %s, Q = %d/s, fleet limiter rates %s and %s, job latency %s±%s, chunk %d, first poll %s\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), b.cpus, c.redisURL, c.quota, b.fleetRate(c.submitBurst), b.fleetRate(c.pollBurst), c.jobLatency, c.jobJitter, c.chunkSize, c.firstPoll)
	failed := false
	for _, s := range c.scenarios {
		var t *table
		switch s {
		case "quota":
			t, err = b.quotaScenario(ctx)
		case "halve":
			t, err = b.halveScenario(ctx)
		case "scale":
			t, err = b.scaleScenario(ctx)
		}
		if t != nil {
			t.write(stdout)
			failed = failed || t.failed
		}
		if err != nil {
			fmt.Fprintf(stderr, "rekeybench: %s: %v\n", s, err)
			return exitFailure
		}
	}
	if failed {
		fmt.Fprintln(stderr, "rekeybench: at least one run failed its correctness check (see the check column)")
		return exitFailure
	}
	return exitOK
}
