package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/envflag"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/redisurl"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// config is everything the worker is configured with.
type config struct {
	redis           *redisurl.Conn
	cph             cph.Config
	endpoints       cph.Endpoints
	kpsEndpoint     string
	concurrency     int
	adminAddr       string
	adminToken      string
	uiReadOnly      bool
	shutdownTimeout time.Duration
	watchdog        time.Duration
	submitRate      ratelimit.RegionalLimit
	pollRate        ratelimit.RegionalLimit
	readRate        ratelimit.RegionalLimit
	limiter         string
	logFormat       string
	logLevel        slog.Level
	pipeline        tasks.Config
	namespace       tasks.Namespace
	queues          map[string]int // by their names in the namespace

	demo        bool
	demoExit    bool
	demoServers int
}

func parseConfig(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	fs := envflag.New("worker", "REKEY_")
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: worker [flags]\n\nRuns cph-rekey's task server. Every flag also reads the environment variable shown.\nCPH credentials come only from HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK, HUAWEICLOUD_SDK_PROJECT_ID\nand HUAWEICLOUD_SDK_SECURITY_TOKEN (temporary credentials).\n\nFlags:\n")
		fs.PrintUsage(stderr)
	}
	c := &config{}
	redisFlags := redisurl.AddFlags(fs, "redis://127.0.0.1:6379", "")
	region := fs.String("region", "", "default CPH `region`, e.g. cn-east-3 (endpoint https://cph.{region}.myhuaweicloud.com): rotations whose targets name none are there")
	var endpoints []string
	fs.Func("endpoint", "CPH endpoint: a plain `url` overrides --region's (e.g. the simulator); REGION=URL sets another region's, before the SDK's\nHUAWEICLOUD_SDK_REGION_CPH_{REGION} (repeat the flag, or separate with commas in the variable)", func(v string) error {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				endpoints = append(endpoints, e)
			}
		}
		return nil
	})
	fs.StringVar(&c.kpsEndpoint, "kps-endpoint", "", "Key Pair Service endpoint `url` of --region, for scheduled retires (enqueue retire --after). Default: the SDK's\nHUAWEICLOUD_SDK_REGION_KPS_{REGION} when set, else the region's CPH endpoint when given, else https://kms.{region}.myhuaweicloud.com; other regions likewise")
	fs.IntVar(&c.concurrency, "concurrency", 20, "tasks run at once by this process")
	fs.StringVar(&c.adminAddr, "admin-addr", "127.0.0.1:8080", "admin HTTP `address` (the rotations console, the asynq web UI, /metrics, /healthz, /readyz); empty disables it")
	fs.StringVar(&c.adminToken, "admin-token", "", "`token` for the web UI and /metrics (basic auth password or bearer); required beyond loopback")
	fs.BoolVar(&c.uiReadOnly, "ui-readonly", false, "serve the console and the asynq web UI read-only: no buttons, writes refused")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 25*time.Second, "on SIGTERM, how long in-flight tasks may finish before they are handed back")
	fs.DurationVar(&c.watchdog, "watchdog-interval", tasks.DefaultWatchdogInterval, "how often the workers (together, whichever holds the task) look for rotations nothing moves any more (a tick or submit task deleted or archived, a cancel cut short) and move them")
	submitRate := fs.String("submit-rate", "10/s:1", "fleet-wide UpdateKeypair `rate` of each (region, project), set per region: 10/s, 600/m, 10/s:20 for burst 20 (a burst of 1 paces calls evenly, so grants that reach the API late never add up to a burst its own bucket refuses);\nregions with another rate before or after it: cn-north-4=20/s:1,10/s:1")
	pollRate := fs.String("poll-rate", "20/s:5", "fleet-wide ListJobs `rate` of each (region, project) (region=rate,… overrides, as --submit-rate)")
	readRate := fs.String("read-rate", "20/s:5", "fleet-wide `rate` of each verification read API in each (region, project): ListCloudPhoneServers pages, and ShowServer for single servers (region=rate,… overrides, as --submit-rate)")
	queues := fs.String("queues", formatQueues(tasks.Queues()), "queue `weights`: queue=weight,… (polls outweigh submits so started chunks finish first; 0 skips a queue); names without the namespace")
	namespace := fs.String("namespace", "", "deployment `name` that prefixes the queues (<name>.rekey-submit…) and Redis keys (cph-rekey.<name>:…), so deployments share one Redis without seeing each other; empty keeps the unprefixed names. Clients and the CLI must use the same")
	fs.StringVar(&c.limiter, "limiter", limiterFleet, "rate limiter: fleet (shared through Redis) or local (per process x/time/rate at the rates above, no 429 feedback; for benchmark baselines only)")
	fs.StringVar(&c.logFormat, "log-format", "json", "log `format`: json or text")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	fs.DurationVar(&c.pipeline.JobTimeout, "job-timeout", 15*time.Minute, "a CPH job still running after this counts as a transient failure")
	fs.DurationVar(&c.pipeline.FirstPoll, "first-poll", tasks.DefaultFirstPoll, "floor of a batch's first poll, which comes when the rotation's jobs are seen to end (their longest duration so far and a fifth more), and its delay until a job has been seen to end (CPH jobs take 1-3 s: a lower floor would cost a rotation's first batches a second ListJobs call each)")
	fs.DurationVar(&c.pipeline.PollCap, "poll-cap", 30*time.Second, "longest delay between polls of a chunk")
	fs.DurationVar(&c.pipeline.CallTimeout, "call-timeout", 30*time.Second, "timeout of one CPH API call")
	fs.BoolVar(&c.demo, "demo", false, "run everything in-process: Redis, the CPH simulator, a rotation and the web UI")
	fs.BoolVar(&c.demoExit, "demo-exit", false, "with --demo, exit when the rotation ends (for tests and scripts)")
	fs.IntVar(&c.demoServers, "demo-servers", 3000, "with --demo, the simulated fleet size")
	if err := fs.Parse(args, getenv); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}

	// bad names the flag and its environment variable: the value may have
	// come from either.
	bad := func(flag, format string, args ...any) error {
		return fmt.Errorf("--%s (%s): "+format, append([]any{flag, fs.EnvName(flag)}, args...)...)
	}
	var err error
	if c.submitRate, err = ratelimit.ParseRegionalLimit(*submitRate, ratelimit.Limit{}); err != nil {
		return nil, bad("submit-rate", "%w", err)
	}
	if c.pollRate, err = ratelimit.ParseRegionalLimit(*pollRate, ratelimit.Limit{}); err != nil {
		return nil, bad("poll-rate", "%w", err)
	}
	if c.readRate, err = ratelimit.ParseRegionalLimit(*readRate, ratelimit.Limit{}); err != nil {
		return nil, bad("read-rate", "%w", err)
	}
	for flag, r := range map[string]ratelimit.RegionalLimit{"submit-rate": c.submitRate, "poll-rate": c.pollRate, "read-rate": c.readRate} {
		if r.Default == (ratelimit.Limit{}) {
			return nil, bad(flag, "no rate for the regions not named: add one, e.g. cn-north-4=20/s:1,10/s:1")
		}
	}
	c.namespace = tasks.Namespace(*namespace)
	if err := c.namespace.Validate(); err != nil {
		return nil, bad("namespace", "%w", err)
	}
	if c.queues, err = parseQueues(*queues, c.namespace); err != nil {
		return nil, bad("queues", "%w", err)
	}
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return nil, bad("log-level", "%q: want debug, info, warn or error", *logLevel)
	}
	if c.limiter != limiterFleet && c.limiter != limiterLocal {
		return nil, bad("limiter", "%q: want %s or %s", c.limiter, limiterFleet, limiterLocal)
	}
	if c.logFormat != "json" && c.logFormat != "text" {
		return nil, bad("log-format", "%q: want json or text", c.logFormat)
	}
	if c.concurrency < 1 || c.concurrency > 10000 {
		return nil, bad("concurrency", "%d: want 1-10000", c.concurrency)
	}
	durations := []struct {
		flag string
		d    time.Duration
	}{
		{"shutdown-timeout", c.shutdownTimeout}, {"watchdog-interval", c.watchdog}, {"job-timeout", c.pipeline.JobTimeout}, {"first-poll", c.pipeline.FirstPoll},
		{"poll-cap", c.pipeline.PollCap}, {"call-timeout", c.pipeline.CallTimeout},
	}
	for _, d := range durations {
		if d.d <= 0 {
			return nil, bad(d.flag, "%s: want a positive duration", d.d)
		}
	}
	if c.demoServers < 1 || c.demoServers > 1_000_000 {
		return nil, bad("demo-servers", "%d: want 1-1000000", c.demoServers)
	}
	if c.demo {
		return c, nil // the demo brings its own Redis and CPH
	}
	if c.redis, err = redisFlags.Conn(); err != nil {
		return nil, err
	}
	plain, perRegion, err := cph.ParseEndpoints(endpoints)
	if err != nil {
		return nil, bad("endpoint", "%w", err)
	}
	if *region == "" && plain == "" {
		return nil, errors.New("no CPH endpoint: set --region (REKEY_REGION) or --endpoint (REKEY_ENDPOINT)")
	}
	c.cph = cph.Config{
		Region:      *region,
		Endpoint:    plain,
		ProjectID:   getenv("HUAWEICLOUD_SDK_PROJECT_ID"),
		Credentials: cph.CredentialsFromEnv(getenv),
	}
	c.endpoints = cph.Endpoints{Region: *region, Plain: plain, Regions: perRegion, Getenv: getenv}
	return c, nil
}

// parseQueues parses "rekey-poll=6,rekey-submit=3" into the weights of
// those queues in ns.
func parseQueues(s string, ns tasks.Namespace) (map[string]int, error) {
	known := tasks.Queues()
	out := map[string]int{}
	positive := false
	for _, part := range strings.Split(s, ",") {
		name, w, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return nil, fmt.Errorf("%q: want queue=weight", part)
		}
		if _, ok := known[name]; !ok {
			return nil, fmt.Errorf("unknown queue %q: want one of %s", name, formatQueues(known))
		}
		n, err := strconv.Atoi(w)
		if err != nil || n < 0 || n > 100 {
			return nil, fmt.Errorf("queue %s weight %q: want 0-100", name, w)
		}
		out[ns.Queue(name)] = n
		positive = positive || n > 0
	}
	if !positive {
		return nil, errors.New("every queue weight is 0: the worker would take no task")
	}
	return out, nil
}

func formatQueues(q map[string]int) string {
	names := make([]string, 0, len(q))
	for name := range q {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, name := range names {
		parts[i] = name + "=" + strconv.Itoa(q[name])
	}
	return strings.Join(parts, ",")
}

// limits are the fleet-wide rates of every API the workers call in
// region ("": in the regions without rates of their own).
func (c *config) limits(region string) map[string]ratelimit.Limit {
	return map[string]ratelimit.Limit{
		tasks.APIUpdateKeypair: c.submitRate.For(region),
		tasks.APIListJobs:      c.pollRate.For(region),
		tasks.APIListServers:   c.readRate.For(region),
		tasks.APIShowServer:    c.readRate.For(region),
	}
}

// regionLimits are the rates of the regions that have their own.
func (c *config) regionLimits() map[string]map[string]ratelimit.Limit {
	out := map[string]map[string]ratelimit.Limit{}
	for _, r := range []ratelimit.RegionalLimit{c.submitRate, c.pollRate, c.readRate} {
		for region := range r.Regions {
			out[region] = c.limits(region)
		}
	}
	return out
}

func (c *config) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
