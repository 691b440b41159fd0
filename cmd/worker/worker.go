package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cph-rekey/cph-rekey/internal/admin"
	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/kps"
	"github.com/cph-rekey/cph-rekey/internal/metrics"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/redisurl"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/rekey"
)

// The limiter's fail-closed backoff when Redis cannot be reached: the
// first delay, doubling up to the ceiling.
const (
	limiterRedisBackoff    = 250 * time.Millisecond
	limiterRedisBackoffMax = 2 * time.Second
	// redisHoldPoll is how often a task that ended while Redis was away
	// checks whether it is back (holdWhileRedisDown).
	redisHoldPoll = 250 * time.Millisecond
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

// runWorker runs the task server and the admin server until ctx is done,
// then shuts down gracefully: no new tasks, in-flight ones get
// --shutdown-timeout to finish and are handed back to the queue after that.
// adminReady, if set, receives the admin server's bound address.
func runWorker(ctx context.Context, c *config, logw io.Writer, adminReady func(addr string)) error {
	log := c.logger(logw)
	redisurl.SetLogger(log)
	rdb := c.redis.Client()
	defer rdb.Close()

	c.cph.UserAgent = "cph-rekey/" + version
	// A connection for every task slot, and for the calls a tick keeps in
	// flight besides (its stages widen with the API's round trip).
	c.cph.MaxIdleConnsPerHost = c.concurrency + tasks.MaxTickCalls
	if _, err := cph.NewClient(c.cph); err != nil {
		return fmt.Errorf("cph client: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := metrics.New(reg)
	inspector := asynq.NewInspectorFromRedisClient(rdb)
	ns := c.namespace
	reg.MustRegister(metrics.NewQueueCollector(inspector, []string{ns.Queue(tasks.QueueSubmit), ns.Queue(tasks.QueuePoll), ns.Queue(tasks.QueueEvents)}, 30*time.Second))

	store := tasks.NewStore(rdb, ns)
	reg.MustRegister(metrics.NewProgressCollector(progress(store), 15*time.Second))

	lim, err := ratelimit.New(rdb, ratelimit.Options{
		Prefix:       ns.LimiterPrefix(),
		Limits:       c.limits(""),
		RegionLimits: c.regionLimits(),
		Observer:     limiterObserver{m: m, log: log},
		// Fail closed while Redis is away, but not for long after it is
		// back: a failover or restart takes seconds, and a task put back
		// for the limiter's default 30 s ceiling would stall its chunk
		// well past it. The client's own timeouts (redisurl.Defaults)
		// already space the retries of one process.
		RedisBackoff:    limiterRedisBackoff,
		RedisBackoffMax: limiterRedisBackoffMax,
	})
	if err != nil {
		return fmt.Errorf("rate limiter: %w", err)
	}
	limiter := func(region, project string) tasks.Limiter {
		return fleetLimiter{l: lim, region: region, project: project}
	}
	defRegion := c.cph.Region
	if defRegion == "" {
		defRegion = endpointKey(c.cph.Endpoint)
	}
	if c.limiter == limiterLocal {
		local := map[tasks.Place]tasks.Limiter{}
		limiter = func(region, project string) tasks.Limiter {
			pl := tasks.Place{Region: region, ProjectID: project}
			if local[pl] == nil {
				local[pl] = newLocalLimiter(c.limits(region), 2*time.Second)
			}
			return local[pl]
		}
		log.Warn("local rate limiter: each process limits itself, none shares the quota or reacts to 429s (benchmark baselines only)")
	}
	pl := &places{base: c.cph, region: defRegion, endpoints: c.endpoints, limiter: limiter, log: log, apis: map[tasks.Place]tasks.API{},
		kps: kps.Endpoints{CPH: c.endpoints, Default: c.kpsEndpoint}, readRate: c.readRate.For}
	enq := asynq.NewClientFromRedisClient(rdb)
	h := tasks.NewHandler(tasks.HandlerOptions{
		Store:     store,
		Places:    pl.at,
		Enqueuer:  enq,
		Inspector: inspector,
		Observer:  regionObserver{Metrics: m, region: defRegion},
		Logger:    log,
		Config:    c.pipeline,
		Retire:    pl.retireAt,
	})
	mux := asynq.NewServeMux()
	h.Register(mux)
	mux.Use(holdWhileRedisDown(queueProbe(rdb), redisHoldPoll, log))

	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:              c.concurrency,
		Queues:                   c.queues,
		IsFailure:                tasks.IsFailure,
		RetryDelayFunc:           tasks.RetryDelay,
		ShutdownTimeout:          c.shutdownTimeout,
		DelayedTaskCheckInterval: tasks.DelayedTaskCheckInterval,
		TaskCheckInterval:        tasks.TaskCheckInterval,
		Logger:                   asynqLogger{log},
		LogLevel:                 asynq.WarnLevel,
		ErrorHandler: asynq.ErrorHandlerFunc(func(ctx context.Context, t *asynq.Task, err error) {
			id, _ := asynq.GetTaskID(ctx)
			if !tasks.IsFailure(err) {
				// A rate-limit delay or an expired lease: the task runs again.
				log.DebugContext(ctx, "task put back", "task_id", id, "type", t.Type(), "err", err)
				return
			}
			log.WarnContext(ctx, "task failed", "task_id", id, "type", t.Type(), "err", err)
		}),
	})

	var stopping atomic.Bool
	var adm *admin.Server
	if c.adminAddr != "" {
		// The console steers rotations as the CLI and tools do, through
		// rekey, with the worker's own task options.
		rotations, err := rekey.NewClient(rdb, rekey.Options{Namespace: string(ns), TaskTimeout: c.pipeline.Tasks.Timeout})
		if err != nil {
			return fmt.Errorf("admin server: %w", err)
		}
		defer rotations.Close()
		adm, err = admin.New(admin.Options{
			Addr:         c.adminAddr,
			Token:        c.adminToken,
			ReadOnly:     c.uiReadOnly,
			RedisConnOpt: c.redis,
			Gatherer:     reg,
			Rotations:    rotations,
			Region:       c.cph.Region,
			Logger:       log,
			Ready: func(ctx context.Context) error {
				if stopping.Load() {
					return errors.New("shutting down")
				}
				return rdb.Ping(ctx).Err()
			},
		})
		if err != nil {
			return fmt.Errorf("admin server: %w", err)
		}
		ln, err := net.Listen("tcp", c.adminAddr)
		if err != nil {
			return fmt.Errorf("admin server: %w", err)
		}
		go func() {
			if err := adm.Serve(ln); err != nil {
				log.Error("admin server stopped", "err", err)
			}
		}()
		if adminReady != nil {
			adminReady(ln.Addr().String())
		}
		log.Info("admin server listening", "addr", ln.Addr().String())
	}

	if err := srv.Start(mux); err != nil {
		return fmt.Errorf("start task server: %w", err)
	}
	watchdog, err := tasks.NewWatchdogScheduler(c.redis, ns, c.watchdog, c.pipeline.Tasks, log)
	if err != nil {
		srv.Shutdown()
		return err
	}
	if err := watchdog.Start(); err != nil {
		srv.Shutdown()
		return fmt.Errorf("start the watchdog's scheduler: %w", err)
	}
	log.Info("worker started", "version", version, "concurrency", c.concurrency, "endpoint", endpointOf(c.cph), "redis", c.redis.String(),
		"namespace", string(ns))
	<-ctx.Done()

	log.Info("shutting down: no new tasks; in-flight tasks get the shutdown timeout", "timeout", c.shutdownTimeout)
	stopping.Store(true)
	watchdog.Shutdown()
	srv.Shutdown()
	enq.Close()
	if adm != nil {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		adm.Shutdown(sctx)
	}
	log.Info("worker stopped")
	return nil
}

// endpointKey names an overridden endpoint in the limiter's keys, which
// refuse the ':' and '/' of a URL.
func endpointKey(endpoint string) string {
	host := endpoint
	if u, err := url.Parse(endpoint); err == nil && u.Host != "" {
		host = u.Host
	}
	return "endpoint-" + strings.NewReplacer(":", "-", "/", "-", "{", "-", "}", "-", " ", "-").Replace(host)
}

func endpointOf(c cph.Config) string {
	if c.Endpoint != "" {
		return c.Endpoint
	}
	return "https://cph." + c.Region + ".myhuaweicloud.com"
}

// progress reads the newest rotations' states and counters for the metrics.
func progress(store *tasks.Store) func(ctx context.Context) ([]metrics.RotationProgress, error) {
	return func(ctx context.Context) ([]metrics.RotationProgress, error) {
		rots, err := store.Rotations(ctx, 50)
		if err != nil {
			return nil, err
		}
		var out []metrics.RotationProgress
		for _, r := range rots {
			out = append(out, metrics.RotationProgress{Rotation: r.ID, State: string(r.State), States: map[string]int64{
				"pending": r.Counts.Pending, "running": r.Counts.Running, "succeeded": r.Counts.Succeeded,
				"failed": r.Counts.Failed, "skipped": r.Counts.Skipped, "cancelled": r.Counts.Cancelled,
			}})
		}
		return out, nil
	}
}

// fleetLimiter keys the shared limiter by (region, project, API), the
// unit of a quota as DESIGN.md's invariant and the simulator take it; the
// real gateway's unit is unconfirmed (docs/ratelimit.md). A region's rates
// apply to each of its projects' keys.
type fleetLimiter struct {
	l               *ratelimit.Limiter
	region, project string
}

func (f fleetLimiter) key(api string) ratelimit.Key {
	return ratelimit.Key{Region: f.region, Project: f.project, API: api}
}

func (f fleetLimiter) Wait(ctx context.Context, api string) error { return f.l.Wait(ctx, f.key(api)) }

// Throttled reports a 429 whose message named quota calls per second
// (0: none), as cph.QuotaPerSecond reads it.
func (f fleetLimiter) Throttled(ctx context.Context, api string, retryAfter time.Duration, quota float64) error {
	return f.l.ThrottledQuota(ctx, f.key(api), retryAfter, quota)
}

// Rate is the shared rate of api as this process last saw it.
func (f fleetLimiter) Rate(api string) float64 { return f.l.Rate(f.key(api)) }

// regionObserver labels the calls of rotations in the worker's default
// place with its region, as the limiter's keys are.
type regionObserver struct {
	*metrics.Metrics
	region string
}

func (o regionObserver) APIRequest(region, api, code string, d time.Duration) {
	o.Metrics.APIRequest(cmp.Or(region, o.region), api, code, d)
}

func (o regionObserver) Throttled(region, api string) {
	o.Metrics.Throttled(cmp.Or(region, o.region), api)
}

// limiterObserver feeds the limiter's hooks into the metrics and the log.
type limiterObserver struct {
	m   *metrics.Metrics
	log *slog.Logger
}

func (o limiterObserver) Granted(k ratelimit.Key, waited time.Duration) {
	o.m.LimiterWait(k.Region, k.API, waited)
}

// Throttled needs nothing here: the task handler that saw the 429 counts it
// (cph_rekey_api_throttled_total) before reporting it to the limiter.
func (o limiterObserver) Throttled(ratelimit.Key) {}

func (o limiterObserver) RateChanged(k ratelimit.Key, perSecond float64) {
	o.m.LimiterRate(k.Region, k.API, perSecond)
	o.log.Info("fleet-wide rate changed", "region", k.Region, "project", k.Project, "api", k.API, "per_second", perSecond)
}

func (o limiterObserver) RedisError(k ratelimit.Key, err error) {
	o.log.Warn("rate limiter cannot reach Redis; nothing is granted until it can", "region", k.Region, "project", k.Project, "api", k.API, "err", err)
}

// asynqLogger sends asynq's own log lines to slog.
type asynqLogger struct{ l *slog.Logger }

func (a asynqLogger) Debug(args ...any) { a.l.Debug(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Info(args ...any)  { a.l.Info(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Warn(args ...any)  { a.l.Warn(fmt.Sprint(args...), "component", "asynq") }
func (a asynqLogger) Error(args ...any) { a.l.Error(fmt.Sprint(args...), "component", "asynq") }

// Fatal honours asynq's Logger contract: log, then exit with status 1.
func (a asynqLogger) Fatal(args ...any) {
	a.l.Error(fmt.Sprint(args...), "component", "asynq", "fatal", true)
	os.Exit(1)
}
