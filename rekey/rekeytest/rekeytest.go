// Package rekeytest runs real rotations in a tool's own tests, with no
// cloud and no Redis to set up, as River's rivertest does for River: it
// starts an in-process Redis (miniredis), the CPH simulator on a loopback
// port and an in-process worker (the task server and handlers cmd/worker
// runs), and hands back a ready *rekey.Client.
//
//	func TestMyTool(t *testing.T) {
//		env := rekeytest.New(t, rekeytest.Options{Servers: 200})
//		st, err := env.Client.Start(ctx, rekey.Request{Keypair: "kp-new", Targets: env.Targets()})
//		…
//		rot, err := env.Client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 50 * time.Millisecond})
//		kp, _ := env.Keypair(serverID) // what the simulated fleet holds now
//	}
//
// Everything is stopped by t.Cleanup. Programs that have no testing.TB
// (examples, demos) use Start and Close.
package rekeytest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"sort"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/kps"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/rekey"
)

// The simulated fleet's project and credentials (Env.CPH holds them).
const (
	ProjectID = "0123456789abcdef0123456789abcdef"
	AccessKey = "REKEYTESTACCESSKEY00"
	SecretKey = "rekeytest-secret-key-not-a-real-one"
	// FleetKeypair is the keypair every simulated server starts on.
	FleetKeypair = "kp-old"
)

// Options shape the simulated fleet and the worker. The zero value is a
// fleet of 100 healthy servers whose jobs take 20 ms.
type Options struct {
	// Servers is the size of the simulated fleet. Zero: 100.
	Servers int
	// JobLatency is how long a job takes. Zero: 20 ms.
	JobLatency time.Duration
	// JobFailRate is the fraction of jobs that fail transiently (and are
	// retried); BadServerRate the fraction of servers that always fail.
	JobFailRate, BadServerRate float64
	// Seed draws the fleet's ids and faults. Zero: 1, so runs repeat.
	Seed uint64
	// Keypairs are the keypairs the simulated KPS holds in the project;
	// a rotation to another is refused by the pre-flight, and its jobs
	// fail. Nil: every name exists (until deleted through KPS).
	Keypairs []string
	// NoWorker starts no worker: rotations wait until StartWorker.
	NoWorker bool
	// Regions are (region, project) places besides the default one, each
	// with a simulator of its own (its own fleet and quota), reached
	// through CPH.Endpoints; Targets lists their servers with their place.
	Regions []Region
}

// Region is a (region, project) place of a multi-region environment.
type Region struct {
	Name      string // a CPH region, e.g. cn-east-3
	ProjectID string // 32 hex digits, not ProjectID
	Servers   int    // zero: Options.Servers
	// UpdateKeypairQuota is the place's own UpdateKeypair quota, calls a
	// second; zero: unlimited.
	UpdateKeypairQuota float64
	// BadServerRate is the fraction of the place's servers that always
	// fail; zero: Options.BadServerRate.
	BadServerRate float64
}

// Env is a running test environment.
type Env struct {
	// Client is a rekey client on the environment's Redis, with Options.CPH
	// pointing at the simulator (discovery, skip-matching and dry runs
	// work).
	Client *rekey.Client
	// Redis is the client's Redis, for a tool's own asynq server on
	// rekey.EventQueue.
	Redis redis.UniversalClient
	// CPH is the simulator's endpoint and credentials.
	CPH *rekey.CPH

	mr      *miniredis.Miniredis
	sim     *cphsim.Sim
	simSrv  *httptest.Server
	api     *cph.Client
	worker  *asynq.Server
	regions []*place // Options.Regions, in order
}

// place is a simulated (region, project) of Options.Regions.
type place struct {
	Region
	sim *cphsim.Sim
	srv *httptest.Server
	api *cph.Client
}

// New starts an environment for a test and stops it when the test ends.
func New(tb testing.TB, opts Options) *Env {
	tb.Helper()
	e, err := Start(opts)
	if err != nil {
		tb.Fatalf("rekeytest: %v", err)
	}
	tb.Cleanup(e.Close)
	return e
}

// Start starts an environment; Close stops it.
func Start(opts Options) (*Env, error) {
	if opts.Servers == 0 {
		opts.Servers = 100
	}
	if opts.JobLatency == 0 {
		opts.JobLatency = 20 * time.Millisecond
	}
	if opts.Seed == 0 {
		opts.Seed = 1
	}
	e := &Env{}
	ok := false
	defer func() {
		if !ok {
			e.Close()
		}
	}()
	e.mr = miniredis.NewMiniRedis()
	if err := e.mr.Start(); err != nil {
		return nil, fmt.Errorf("start miniredis: %w", err)
	}
	e.Redis = redis.NewClient(&redis.Options{Addr: e.mr.Addr()})
	e.sim = cphsim.New(cphsim.Options{ProjectID: ProjectID, AccessKey: AccessKey, SecretKey: SecretKey, Servers: opts.Servers,
		JobLatency: opts.JobLatency, JobFailRate: opts.JobFailRate, BadServerRate: opts.BadServerRate, Seed: opts.Seed,
		Keypairs: opts.Keypairs})
	e.simSrv = httptest.NewServer(e.sim)
	e.CPH = &rekey.CPH{Endpoint: e.simSrv.URL, ProjectID: ProjectID, AccessKey: AccessKey, SecretKey: SecretKey}
	var err error
	e.api, err = cph.NewClient(cph.Config{Endpoint: e.simSrv.URL, ProjectID: ProjectID,
		Credentials: cph.Credentials{AccessKey: AccessKey, SecretKey: SecretKey}})
	if err != nil {
		return nil, fmt.Errorf("cph client: %w", err)
	}
	for i, r := range opts.Regions {
		p := &place{Region: r}
		if p.Servers == 0 {
			p.Servers = opts.Servers
		}
		if p.BadServerRate == 0 {
			p.BadServerRate = opts.BadServerRate
		}
		p.sim = cphsim.New(cphsim.Options{ProjectID: r.ProjectID, AccessKey: AccessKey, SecretKey: SecretKey, Servers: p.Servers,
			JobLatency: opts.JobLatency, JobFailRate: opts.JobFailRate, BadServerRate: p.BadServerRate, Seed: opts.Seed + uint64(i) + 1,
			UpdateKeypairQuota: r.UpdateKeypairQuota})
		p.srv = httptest.NewServer(p.sim)
		e.regions = append(e.regions, p)
		if e.CPH.Endpoints == nil {
			e.CPH.Endpoints = map[string]string{}
		}
		e.CPH.Endpoints[r.Name] = p.srv.URL
		if p.api, err = cph.NewClient(cph.Config{Region: r.Name, Endpoint: p.srv.URL, ProjectID: r.ProjectID,
			Credentials: cph.Credentials{AccessKey: AccessKey, SecretKey: SecretKey}}); err != nil {
			return nil, fmt.Errorf("cph client of %s: %w", r.Name, err)
		}
	}
	e.Client, err = rekey.NewClient(e.Redis, rekey.Options{CPH: e.CPH, ReadRate: rekey.Rate{Events: 1000, Per: time.Second, Burst: 100}})
	if err != nil {
		return nil, err
	}
	if !opts.NoWorker {
		if err := e.StartWorker(); err != nil {
			return nil, err
		}
	}
	ok = true
	return e, nil
}

// StartWorker starts the in-process worker (Start does, unless
// Options.NoWorker): the pipeline's handlers under asynq, as cmd/worker
// runs them, with the fleet-wide limiter at 1000 calls a second per API
// and delays shortened for tests (first poll 20 ms, retries after 50 ms to
// 500 ms).
func (e *Env) StartWorker() error {
	if e.worker != nil {
		return errors.New("rekeytest: the worker is running")
	}
	rl := ratelimit.Limit{Rate: 1000, Period: time.Second, Burst: 100}
	lim, err := ratelimit.New(e.Redis, ratelimit.Options{Limits: map[string]ratelimit.Limit{
		tasks.APIUpdateKeypair: rl, tasks.APIListJobs: rl, tasks.APIListServers: rl, tasks.APIShowServer: rl}})
	if err != nil {
		return fmt.Errorf("rate limiter: %w", err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h := tasks.NewHandler(tasks.HandlerOptions{
		Store: tasks.NewStore(e.Redis, ""),
		Places: func(pl tasks.Place) (tasks.API, tasks.Limiter) {
			for _, p := range e.regions {
				// An empty project is the default one, as the worker reads it.
				if p.Name == pl.Region && (p.ProjectID == pl.ProjectID || pl.ProjectID == "" && p.ProjectID == ProjectID) {
					return p.api, fleetLimiter{lim, p.Name, p.ProjectID}
				}
			}
			return e.api, fleetLimiter{lim, "rekeytest", ProjectID}
		},
		Retire:   e.retireAt,
		Enqueuer: asynq.NewClientFromRedisClient(e.Redis),
		Logger:   quiet,
		Config: tasks.Config{FirstPoll: 20 * time.Millisecond, PollCap: 200 * time.Millisecond, RetryBase: 50 * time.Millisecond,
			RetryCap: 500 * time.Millisecond, Linger: 100 * time.Millisecond, VerifyLinger: 500 * time.Millisecond,
			JobTimeout: time.Minute, CallTimeout: 10 * time.Second},
	})
	mux := asynq.NewServeMux()
	h.Register(mux)
	e.worker = asynq.NewServerFromRedisClient(e.Redis, asynq.Config{
		Concurrency:              8,
		Queues:                   tasks.Queues(),
		IsFailure:                tasks.IsFailure,
		RetryDelayFunc:           tasks.RetryDelay,
		ShutdownTimeout:          2 * time.Second,
		DelayedTaskCheckInterval: 20 * time.Millisecond,
		TaskCheckInterval:        tasks.TaskCheckInterval,
		LogLevel:                 asynq.FatalLevel,
	})
	if err := e.worker.Start(mux); err != nil {
		e.worker = nil
		return fmt.Errorf("start worker: %w", err)
	}
	return nil
}

// retireAt gives the worker's scheduled retires the fleet and KPS of a
// place: its simulator's.
func (e *Env) retireAt(pl tasks.Place) (*tasks.RetireAt, error) {
	api, url, region, project := e.api, e.simSrv.URL, "", ProjectID
	for _, p := range e.regions {
		if p.Name == pl.Region && (p.ProjectID == pl.ProjectID || pl.ProjectID == "" && p.ProjectID == ProjectID) {
			api, url, region, project = p.api, p.srv.URL, p.Name, p.ProjectID
		}
	}
	kc, err := kps.NewClient(kps.Config{Endpoint: url, ProjectID: project, Credentials: cph.Credentials{AccessKey: AccessKey, SecretKey: SecretKey}})
	if err != nil {
		return nil, err
	}
	return &tasks.RetireAt{Fleet: api, Keypairs: kc, Region: region, ProjectID: project}, nil
}

// StopWorker stops the in-process worker, handing its in-flight tasks
// back to the queue, as a worker pod's SIGTERM does.
func (e *Env) StopWorker() {
	if e.worker != nil {
		e.worker.Shutdown()
		e.worker = nil
	}
}

// Close stops the worker, the simulator and Redis.
func (e *Env) Close() {
	e.StopWorker()
	if e.Client != nil {
		e.Client.Close()
	}
	if e.Redis != nil {
		e.Redis.Close()
	}
	if e.simSrv != nil {
		e.simSrv.Close()
	}
	for _, p := range e.regions {
		p.srv.Close()
	}
	if e.mr != nil {
		e.mr.Close()
	}
}

// Targets lists every server of the simulated fleet, in the project's list
// order, as rotation targets: the default place's, then each of
// Options.Regions' with its region and project.
func (e *Env) Targets() []rekey.Target {
	var out []rekey.Target
	for _, s := range e.sim.Servers() {
		out = append(out, rekey.Target{ServerID: s.ServerID})
	}
	for _, p := range e.regions {
		for _, s := range p.sim.Servers() {
			out = append(out, rekey.Target{ServerID: s.ServerID, Region: p.Name, ProjectID: p.ProjectID})
		}
	}
	return out
}

// Keypair returns the keypair the simulated server holds now, and whether
// the server exists, in the default place.
func (e *Env) Keypair(serverID string) (string, bool) { return e.sim.Keypair(serverID) }

// KeypairIn is Keypair in region (one of Options.Regions; "": the default
// place).
func (e *Env) KeypairIn(region, serverID string) (string, bool) {
	for _, p := range e.regions {
		if p.Name == region {
			return p.sim.Keypair(serverID)
		}
	}
	return e.sim.Keypair(serverID)
}

// CallsIn is Calls of region's simulator (one of Options.Regions; "": the
// default place's).
func (e *Env) CallsIn(region string) map[string]int {
	sim := e.sim
	for _, p := range e.regions {
		if p.Name == region {
			sim = p.sim
		}
	}
	out := map[string]int{}
	for api, n := range sim.Stats().Calls {
		out[string(api)] = n
	}
	return out
}

// BadServers lists the servers that fail every time (Options.BadServerRate),
// sorted.
func (e *Env) BadServers() []string {
	var out []string
	for _, b := range e.sim.BadServers() {
		out = append(out, b.ServerID)
	}
	sort.Strings(out)
	return out
}

// Calls counts the simulator's API calls by name ("UpdateKeypair",
// "ListJobs", "ListServers", "ShowServer", …), whatever their answers.
func (e *Env) Calls() map[string]int {
	out := map[string]int{}
	for api, n := range e.sim.Stats().Calls {
		out[string(api)] = n
	}
	return out
}

// Event returns the completion event enqueued for rotation id on
// rekey.EventQueue, without consuming it. A rotation's event follows its
// last outcome by a moment, so Event waits for it for up to 10 s (or until
// ctx ends), then reports rekey.ErrNotFound.
func (e *Env) Event(ctx context.Context, id string) (*rekey.Event, error) {
	insp := asynq.NewInspectorFromRedisClient(e.Redis)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		info, err := insp.GetTaskInfo(rekey.EventQueue, rekey.EventTaskID(id))
		switch {
		case err == nil:
			return rekey.DecodeEvent(info.Payload)
		case !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
			return nil, fmt.Errorf("completion event of %s: %w", id, err)
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("completion event of %s: %w", id, rekey.ErrNotFound)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fleetLimiter keys the shared limiter by (region, project, API), as the
// worker does.
type fleetLimiter struct {
	l               *ratelimit.Limiter
	region, project string
}

func (f fleetLimiter) key(api string) ratelimit.Key {
	return ratelimit.Key{Region: f.region, Project: f.project, API: api}
}

func (f fleetLimiter) Wait(ctx context.Context, api string) error { return f.l.Wait(ctx, f.key(api)) }

func (f fleetLimiter) Throttled(ctx context.Context, api string, retryAfter time.Duration, quota float64) error {
	return f.l.ThrottledQuota(ctx, f.key(api), retryAfter, quota)
}

func (f fleetLimiter) Rate(api string) float64 { return f.l.Rate(f.key(api)) }
