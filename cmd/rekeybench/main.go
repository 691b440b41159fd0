// Command rekeybench measures how well cph-rekey uses a CPH API quota at
// its defaults: every API at the simulator's quota Q, verification on, with
// 0 % and 5 % transient job failures, beside baselines; a rotation of part
// of a project; quota halving; scale-out. It runs the real worker, enqueue
// and cphsim binaries as processes against a real Redis and prints one
// Markdown table per scenario:
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
	"github.com/cph-rekey/cph-rekey/internal/tasks"
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
	rows        string // the defaults scenario runs only the rows whose name holds one of these
	servers     int
	seqServers  int
	quota       int
	submitBurst int
	pollBurst   int
	readBurst   int
	failRates   []float64
	subset      int
	workers     int
	scale       []int
	chunkSize   int
	namespace   tasks.Namespace
	concurrency int
	jobLatency  time.Duration
	jobJitter   time.Duration
	apiLatency  latency // every API answer's latency in the defaults' twin runs (0: none)
	firstPoll   time.Duration
	pollCap     time.Duration
	halveAt     float64
	sample      time.Duration
	runTimeout  time.Duration
	redisURL    string
	redis       *redisurl.Flags
	binDir      string
	keep        bool
	adaptive    adaptiveConfig // the raise and isolated scenarios (adaptive.go)
}

var scenarioNames = []string{"defaults", "quota", "subset", "halve", "scale", "raise", "isolated", "regions"}

// allScenarios are the scenarios of --scenario all: quota runs the
// defaults' rows too.
var allScenarios = []string{"quota", "subset", "halve", "scale", "raise", "isolated"}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := envflag.New("rekeybench", "REKEY_BENCH_")
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: rekeybench [flags]\n\n"+
			"Runs cph-rekey's quota benchmarks (issue 4) with the real worker, enqueue and cphsim binaries\n"+
			"against a real Redis, and prints one Markdown table per scenario:\n"+
			"  defaults  cph-rekey at its defaults, every API at Q: 0 %% and 5 %% transient job failures, a moving list,\n"+
			"            no places, --verify=false; each at 0 ms and again at --latency per API answer\n"+
			"  quota     the defaults' rows, then a sequential client and 4 workers with local limiters at Q and Q/4\n"+
			"  subset    a rotation of every --subset'th server of the project: which way verification reads\n"+
			"  halve     the simulator's UpdateKeypair quota halves mid-run: how long until 429s stop, quota use after\n"+
			"  scale     1, 4 and 16 worker processes at the same Q\n"+
			"  raise     the UpdateKeypair quota halves, then comes back: quota use after each change\n"+
			"  isolated  the fleet limiter at Q with burst Q vs burst 1 and the local baselines\n"+
			"  regions   --servers in one region, then split over 4 regions at Q each as one rotation (not in all)\n\n"+
			"Runs use the worker's and enqueue's defaults except the rates: every API at Q, with the worker's default\n"+
			"bursts (--submit-rate Q/s:1, --poll-rate and --read-rate Q/s:5).\n\n"+
			"WARNING: every run FLUSHDBs the Redis database given with --redis (default DB 13).\n"+
			"The bench deliberately does not read REDIS_URL, so it cannot flush a Redis meant for something else.\n\n"+
			"Every flag also reads the environment variable shown. Exit codes: 0 ok, 1 a run failed or was wrong, 2 bad flags.\n\nFlags:\n")
		fs.PrintUsage(stderr)
	}
	scenario := fs.String("scenario", "all", "`scenarios` to run: all ("+strings.Join(allScenarios, ", ")+"), or a comma-separated list of "+strings.Join(scenarioNames, ", "))
	fs.StringVar(&c.rows, "rows", "", "defaults and quota scenarios: run only the rows whose name contains one of these comma-separated `texts` (any case), e.g. \"0 % transient,moving list\"; empty: every row")
	fs.IntVar(&c.servers, "servers", 20000, "fleet size of every cph-rekey run")
	fs.IntVar(&c.seqServers, "seq-servers", 1000, "fleet size of the sequential baseline, extrapolated to --servers (it takes ~2.5 s a chunk)")
	fs.IntVar(&c.quota, "quota", 20, "the simulator's quota Q, requests/s of every API (UpdateKeypair, ListJobs, each read)")
	fs.IntVar(&c.submitBurst, "submit-burst", 1, "burst of the workers' UpdateKeypair rate (--submit-rate Q/s:N); the worker's default is 1")
	fs.IntVar(&c.pollBurst, "poll-burst", 5, "burst of the workers' ListJobs rate (--poll-rate Q/s:N); the worker's default is 5")
	fs.IntVar(&c.readBurst, "read-burst", 5, "burst of the workers' read rates (--read-rate Q/s:N); the worker's default is 5")
	failRates := fs.String("fail-rates", "0,0.05", "`fractions` of jobs failing transiently in the defaults and quota scenarios, one run each")
	fs.IntVar(&c.subset, "subset", 10, "the subset scenario rotates every `N`th server of the project")
	fs.IntVar(&c.workers, "workers", 4, "worker processes of the quota and halve scenarios")
	scale := fs.String("scale", "1,4,16", "worker process `counts` of the scale scenario")
	fs.IntVar(&c.chunkSize, "chunk-size", 0, "servers per UpdateKeypair call (1-100); 0: enqueue's default")
	namespace := fs.String("namespace", "", "--namespace of the workers and enqueue (prefixed queues and keys); empty: the default")
	fs.IntVar(&c.concurrency, "concurrency", 20, "--concurrency of every worker process")
	fs.DurationVar(&c.jobLatency, "job-latency", 2*time.Second, "the simulator's job latency")
	fs.DurationVar(&c.jobJitter, "job-jitter", 0, "the simulator's job latency spread (latency ± jitter)")
	fs.DurationVar(&c.apiLatency.mean, "latency", 300*time.Millisecond, "defaults and quota scenarios: every cph-rekey run again with each API answer waiting this long (cphsim --latency), beside the 0 ms run; 0: no latency runs")
	fs.DurationVar(&c.apiLatency.jitter, "latency-jitter", 150*time.Millisecond, "spread of --latency: each answer waits latency ± jitter, uniformly")
	fs.DurationVar(&c.firstPoll, "first-poll", 0, "--first-poll of the workers (and the sequential client's first poll); 0: the worker's default")
	fs.DurationVar(&c.pollCap, "poll-cap", 0, "--poll-cap of the workers; 0: the worker's default")
	fs.Float64Var(&c.halveAt, "halve-at", 0.3, "halve scenario: halve the quota when this `fraction` of the chunks is submitted")
	c.adaptive.flags(fs)
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
	if c.namespace = tasks.Namespace(*namespace); c.namespace.Validate() != nil {
		return nil, fmt.Errorf("--namespace: %w", c.namespace.Validate())
	}
	if c.scale, err = parseCounts(*scale); err != nil {
		return nil, fmt.Errorf("--scale: %w", err)
	}
	if c.failRates, err = parseRates(*failRates); err != nil {
		return nil, fmt.Errorf("--fail-rates: %w", err)
	}
	for _, r := range []struct {
		name   string
		v      int
		lo, hi int
	}{
		{"servers", c.servers, 1, 1_000_000}, {"seq-servers", c.seqServers, 1, 1_000_000},
		{"quota", c.quota, 1, 10_000}, {"submit-burst", c.submitBurst, 0, 10_000}, {"poll-burst", c.pollBurst, 0, 10_000}, {"workers", c.workers, 1, 64},
		{"read-burst", c.readBurst, 1, 10_000}, {"subset", c.subset, 1, 1_000},
		{"chunk-size", c.chunkSize, 0, 100}, {"concurrency", c.concurrency, 1, 10_000},
	} {
		if r.v < r.lo || r.v > r.hi {
			return nil, fmt.Errorf("--%s %d: want %d-%d", r.name, r.v, r.lo, r.hi)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"job-latency", c.jobLatency}, {"sample", c.sample}, {"run-timeout", c.runTimeout}} {
		if d.v <= 0 {
			return nil, fmt.Errorf("--%s %s: want a positive duration", d.name, d.v)
		}
	}
	if c.firstPoll < 0 || c.pollCap < 0 {
		return nil, fmt.Errorf("--first-poll %s, --poll-cap %s: want 0 (the worker's default) or a positive duration", c.firstPoll, c.pollCap)
	}
	if c.chunkSize == 0 {
		c.chunkSize = tasks.DefaultChunkSize
	}
	if c.jobJitter < 0 || c.jobJitter > c.jobLatency {
		return nil, fmt.Errorf("--job-jitter %s: want 0 to --job-latency (%s)", c.jobJitter, c.jobLatency)
	}
	if c.apiLatency.mean < 0 {
		return nil, fmt.Errorf("--latency %s: want 0 (no latency runs) or a positive duration", c.apiLatency.mean)
	}
	if c.apiLatency.mean == 0 {
		c.apiLatency.jitter = 0 // no latency runs: the spread's default is moot
	}
	if c.apiLatency.jitter < 0 || c.apiLatency.jitter > c.apiLatency.mean {
		return nil, fmt.Errorf("--latency-jitter %s: want 0 to --latency (%s)", c.apiLatency.jitter, c.apiLatency.mean)
	}
	if !(c.halveAt > 0 && c.halveAt < 1) {
		return nil, fmt.Errorf("--halve-at %v: want a fraction in (0, 1)", c.halveAt)
	}
	if c.quota < 2 && c.wants("halve") {
		return nil, fmt.Errorf("--quota %d: the halve scenario needs at least 2", c.quota)
	}
	if err := c.adaptive.validate(); err != nil {
		return nil, err
	}
	if c.redisURL = c.redis.URL; c.redisURL == "" {
		return nil, errors.New("--redis: empty URL")
	}
	return c, nil
}

func parseScenarios(s string) ([]string, error) {
	if s == "all" {
		return allScenarios, nil
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

func parseRates(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		r, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
		if err != nil || r < 0 || r >= 1 {
			return nil, fmt.Errorf("%q: want comma-separated fractions in [0, 1)", f)
		}
		out = append(out, r)
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
	fmt.Fprintf(stdout, "rekeybench %s, GOMAXPROCS %d, Redis %s, Q = %d/s for every API, worker rates --submit-rate %s --poll-rate %s --read-rate %s, job latency %s±%s, API latency %s, chunk %d, first poll %s, poll cap %s\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 MST"), b.cpus, c.redisURL, c.quota, b.fleetRate(c.submitBurst), b.fleetRate(c.pollBurst), b.fleetRate(c.readBurst),
		c.jobLatency, c.jobJitter, c.apiLatency.both(), c.chunkSize, orDefault(c.firstPoll), orDefault(c.pollCap))
	if h := c.adaptive.header(); h != "" {
		fmt.Fprintf(stdout, "%s\n\n", h)
	}
	failed := false
	for _, s := range c.scenarios {
		var (
			t  *table
			ts []*table
		)
		switch s {
		case "defaults":
			ts, err = b.defaultsScenario(ctx, false)
		case "quota":
			ts, err = b.defaultsScenario(ctx, true)
		case "subset":
			t, err = b.subsetScenario(ctx)
		case "halve":
			t, err = b.halveScenario(ctx)
		case "scale":
			t, err = b.scaleScenario(ctx)
		case "regions":
			t, err = b.regionsScenario(ctx)
		default:
			t, err = b.adaptiveScenario(ctx, s)
		}
		if t != nil {
			ts = append(ts, t)
		}
		for _, t := range ts {
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

// latency is how long the simulator's API answers wait: mean ± jitter,
// uniformly (cphsim --latency, --latency-jitter).
type latency struct{ mean, jitter time.Duration }

func (l latency) String() string {
	if l.jitter == 0 {
		return l.mean.String()
	}
	return l.mean.String() + "±" + l.jitter.String()
}

// both names the API latencies the defaults run at: 0, and l unless it is 0.
func (l latency) both() string {
	if l.mean == 0 {
		return "0"
	}
	return "0 and " + l.String()
}

// orDefault shows a duration flag, 0 meaning the worker's default.
func orDefault(d time.Duration) string {
	if d == 0 {
		return "the worker's default"
	}
	return d.String()
}
