package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/envflag"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// config is everything the worker is configured with.
type config struct {
	redisURL        string
	redis           asynq.RedisConnOpt
	cph             cph.Config
	concurrency     int
	adminAddr       string
	adminToken      string
	uiReadOnly      bool
	shutdownTimeout time.Duration
	submitRate      ratelimit.Limit
	pollRate        ratelimit.Limit
	limiter         string
	logFormat       string
	logLevel        slog.Level
	pipeline        tasks.Config

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
	fs.StringVar(&c.redisURL, "redis", "redis://127.0.0.1:6379", "Redis `url` (redis://, rediss://, redis-sentinel://)")
	fs.Env("redis", "REDIS_URL")
	region := fs.String("region", "", "CPH `region`, e.g. cn-east-3 (endpoint https://cph.{region}.myhuaweicloud.com)")
	endpoint := fs.String("endpoint", "", "CPH endpoint `url`, overrides --region (e.g. the simulator)")
	fs.IntVar(&c.concurrency, "concurrency", 20, "tasks run at once by this process")
	fs.StringVar(&c.adminAddr, "admin-addr", "127.0.0.1:8080", "admin HTTP `address` (web UI, /metrics, /healthz, /readyz); empty disables it")
	fs.StringVar(&c.adminToken, "admin-token", "", "`token` for the web UI and /metrics (basic auth password or bearer); required beyond loopback")
	fs.BoolVar(&c.uiReadOnly, "ui-readonly", false, "serve the web UI read-only")
	fs.DurationVar(&c.shutdownTimeout, "shutdown-timeout", 25*time.Second, "on SIGTERM, how long in-flight tasks may finish before they are handed back")
	submitRate := fs.String("submit-rate", "10/s", "fleet-wide UpdateKeypair `rate` (like 10/s, 600/m, 10/s:20 for burst 20)")
	pollRate := fs.String("poll-rate", "20/s", "fleet-wide ListJobs `rate`")
	fs.StringVar(&c.limiter, "limiter", limiterFleet, "rate limiter: fleet (shared through Redis) or local (per process x/time/rate at the rates above, no 429 feedback; for benchmark baselines only)")
	fs.StringVar(&c.logFormat, "log-format", "json", "log `format`: json or text")
	logLevel := fs.String("log-level", "info", "log `level`: debug, info, warn, error")
	fs.DurationVar(&c.pipeline.JobTimeout, "job-timeout", 15*time.Minute, "a CPH job still running after this counts as a transient failure")
	fs.DurationVar(&c.pipeline.FirstPoll, "first-poll", 3*time.Second, "delay before a chunk's first poll")
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

	var err error
	if c.submitRate, err = ratelimit.ParseLimit(*submitRate); err != nil {
		return nil, fmt.Errorf("--submit-rate: %w", err)
	}
	if c.pollRate, err = ratelimit.ParseLimit(*pollRate); err != nil {
		return nil, fmt.Errorf("--poll-rate: %w", err)
	}
	if err := c.logLevel.UnmarshalText([]byte(*logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	if c.limiter != limiterFleet && c.limiter != limiterLocal {
		return nil, fmt.Errorf("--limiter %q: want %s or %s", c.limiter, limiterFleet, limiterLocal)
	}
	if c.logFormat != "json" && c.logFormat != "text" {
		return nil, fmt.Errorf("--log-format %q: want json or text", c.logFormat)
	}
	if c.concurrency < 1 || c.concurrency > 10000 {
		return nil, fmt.Errorf("--concurrency %d: want 1-10000", c.concurrency)
	}
	if c.shutdownTimeout <= 0 {
		return nil, fmt.Errorf("--shutdown-timeout %s: want a positive duration", c.shutdownTimeout)
	}
	for name, d := range map[string]time.Duration{"--job-timeout": c.pipeline.JobTimeout, "--first-poll": c.pipeline.FirstPoll,
		"--poll-cap": c.pipeline.PollCap, "--call-timeout": c.pipeline.CallTimeout} {
		if d <= 0 {
			return nil, fmt.Errorf("%s %s: want a positive duration", name, d)
		}
	}
	if c.demoServers < 1 || c.demoServers > 1_000_000 {
		return nil, fmt.Errorf("--demo-servers %d: want 1-1000000", c.demoServers)
	}
	if c.demo {
		return c, nil // the demo brings its own Redis and CPH
	}
	if c.redis, err = asynq.ParseRedisURI(c.redisURL); err != nil {
		return nil, fmt.Errorf("--redis / REDIS_URL: %w", err)
	}
	if *region == "" && *endpoint == "" {
		return nil, errors.New("no CPH endpoint: set --region (REKEY_REGION) or --endpoint (REKEY_ENDPOINT)")
	}
	c.cph = cph.Config{
		Region:      *region,
		Endpoint:    *endpoint,
		ProjectID:   getenv("HUAWEICLOUD_SDK_PROJECT_ID"),
		Credentials: cph.CredentialsFromEnv(getenv),
	}
	return c, nil
}

func (c *config) logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.logLevel}
	if c.logFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
