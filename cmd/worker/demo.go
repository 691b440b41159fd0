package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/redisurl"
	"github.com/cph-rekey/cph-rekey/rekey"
)

// Demo credentials: the simulators accept these and nothing else.
const (
	demoAK      = "DEMOACCESSKEY0000000"
	demoSK      = "demo-secret-key-not-a-real-one"
	demoProject = "0123456789abcdef0123456789abcdef"
	demoKeypair = "kp-demo-2026"
)

// demoRegion is one (region, project) of the demo's fleet: a simulator of
// its own, with its own quota, as a real region has.
type demoRegion struct {
	name, project string
	servers       int
	// quota is its UpdateKeypair quota, calls a second: under the
	// workers' configured 10/s, so the first 429s teach the fleet limiter
	// the region's real quota.
	quota float64
	sim   *cphsim.Sim
	url   string
}

// demoRegions split the demo's fleet: two thirds in the default region,
// a third in a second region with a smaller quota.
func demoRegions(servers int) []*demoRegion {
	east := servers / 3
	return []*demoRegion{
		{name: "cn-north-4", project: demoProject, servers: servers - east, quota: 5},
		{name: "cn-east-3", project: "fedcba9876543210fedcba9876543210", servers: east, quota: 3},
	}
}

// serve starts the region's simulator, with realistic faults.
func (d *demoRegion) serve(seed uint64) (stop func(), err error) {
	d.sim = cphsim.New(cphsim.Options{
		ProjectID:          d.project,
		AccessKey:          demoAK,
		SecretKey:          demoSK,
		Servers:            d.servers,
		JobLatency:         2 * time.Second,
		JobJitter:          time.Second,
		UpdateKeypairQuota: d.quota,
		ListJobsQuota:      30,
		ReadQuota:          20,
		Error5xxRate:       0.02,
		JobFailRate:        0.05,
		BadServerRate:      0.01,
		Seed:               seed,
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("demo simulator of %s: %w", d.name, err)
	}
	srv := &http.Server{Handler: d.sim, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	d.url = "http://" + ln.Addr().String()
	return func() { srv.Close() }, nil
}

// runDemo runs a whole rotation in one process: miniredis, a CPH
// simulator with realistic faults in each of two regions, a worker, a
// rotation of the simulated fleet across both, progress on stdout and the
// web UI.
func runDemo(ctx context.Context, c *config, stdout, stderr io.Writer) error {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return fmt.Errorf("demo redis: %w", err)
	}
	defer mr.Close()

	regions := demoRegions(c.demoServers)
	others := map[string]string{}
	for i, r := range regions {
		stop, err := r.serve(uint64(i + 1))
		if err != nil {
			return err
		}
		defer stop()
		if i > 0 {
			others[r.name] = r.url
		}
	}
	home := regions[0]

	// The demo's worker is the real one, pointed at the embedded parts:
	// the default region's simulator, and the other's by --endpoint
	// REGION=URL.
	var err error
	if c.redis, err = redisurl.Parse("redis://"+mr.Addr(), redisurl.Options{}); err != nil {
		return err
	}
	c.cph = cph.Config{Region: home.name, Endpoint: home.url, ProjectID: home.project,
		Credentials: cph.Credentials{AccessKey: demoAK, SecretKey: demoSK}}
	c.endpoints = cph.Endpoints{Region: home.name, Plain: home.url, Regions: others}
	c.pipeline.JobTimeout = time.Minute
	if c.logLevel == slog.LevelInfo { // the demo prints progress; the worker logs only warnings and errors
		c.logLevel = slog.LevelWarn
	}

	if c.adminAddr != "" {
		// The demo's UI is a convenience: when the usual port is taken, any
		// free one will do.
		if ln, err := net.Listen("tcp", c.adminAddr); err != nil {
			fmt.Fprintf(stdout, "%s is in use; the web UI takes a free port instead\n", c.adminAddr)
			c.adminAddr = "127.0.0.1:0"
		} else {
			ln.Close()
		}
	}

	wctx, stopWorker := context.WithCancel(ctx)
	defer stopWorker()
	adminAddr := make(chan string, 1)
	workerDone := make(chan error, 1)
	// The worker's log (structured, for machines) goes to a file the demo
	// names, so its own output stays a progress report for people.
	logf, err := os.CreateTemp("", "cph-rekey-demo-*.log")
	if err != nil {
		return fmt.Errorf("demo log: %w", err)
	}
	defer logf.Close()
	fmt.Fprintf(stdout, "worker log:    %s\n", logf.Name())
	go func() { workerDone <- runWorker(wctx, c, logf, func(a string) { adminAddr <- a }) }()
	console := ""
	select {
	case a := <-adminAddr:
		console = "http://" + a + "/rotations/"
		fmt.Fprintf(stdout, "console:       %s\nasynq web UI:  http://%s/monitoring/\nmetrics:       http://%s/metrics\n", console, a, a)
	case err := <-workerDone:
		return fmt.Errorf("demo worker: %w", err)
	case <-time.After(10 * time.Second):
		if c.adminAddr != "" {
			return errors.New("demo worker did not start its admin server within 10s")
		}
	}

	// Start the rotation the way `enqueue start fleet.csv` does with a
	// region column: through rekey, the plan paging through each region's
	// read quota at the worker's read rate.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	rr := c.readRate.Default
	client, err := rekey.NewClient(rdb, rekey.Options{Namespace: string(c.namespace), TaskTimeout: c.pipeline.Tasks.Timeout,
		CPH: &rekey.CPH{Region: home.name, Endpoint: home.url, Endpoints: others, ProjectID: home.project,
			AccessKey: demoAK, SecretKey: demoSK},
		ReadRate: rekey.Rate{Events: rr.Rate, Per: rr.Period, Burst: rr.Burst}})
	if err != nil {
		return err
	}
	defer client.Close()
	var targets []rekey.Target
	for _, r := range regions {
		for _, s := range r.sim.Servers() {
			t := rekey.Target{ServerID: s.ServerID}
			if r != home {
				t.Region, t.ProjectID = r.name, r.project
			}
			targets = append(targets, t)
		}
	}
	st, err := client.Start(ctx, rekey.Request{Keypair: demoKeypair, Targets: targets, Actor: "demo"})
	if err != nil {
		return fmt.Errorf("demo rotation: %w", err)
	}
	fmt.Fprintf(stdout, "rotation %s: %d servers in %d chunks → keypair %s, in two regions:\n", st.Rotation.ID, st.Rotation.Counts.Total,
		st.Rotation.Chunks, demoKeypair)
	for i, p := range st.Rotation.Parts {
		fmt.Fprintf(stdout, "  %-11s part %s: %4d servers, CPH quota %g UpdateKeypair/s, error budget %d\n", regions[i].name, p.ID,
			p.Counts.Total, regions[i].quota, p.MaxErrors)
	}
	if console != "" {
		fmt.Fprintf(stdout, "its page:      %s%s (pause, resume or cancel it, or a region, there)\n", console, st.Rotation.ID)
	}
	fmt.Fprintf(stdout, "simulated faults: 2%% HTTP 5xx, 5%% transient job failures, 1%% permanently bad servers, and each region's\n"+
		"quota under the configured 10/s: the first 429s teach the fleet limiter each region's real quota\n\n")

	rot, err := watchDemo(ctx, client, st.Rotation.ID, regions, stdout)
	if err != nil {
		return err
	}
	if err := demoSummary(ctx, stdout, client, regions, rot, mr.Addr()); err != nil {
		return err
	}
	if !c.demoExit {
		fmt.Fprintf(stdout, "\nThe web UI stays up; press Ctrl-C to stop.\n")
		<-ctx.Done()
	}
	stopWorker()
	return <-workerDone
}

// watchDemo prints the rotation's progress once a second, a line with
// each region's share, until it finishes.
func watchDemo(ctx context.Context, client *rekey.Client, id string, regions []*demoRegion, w io.Writer) (*rekey.Rotation, error) {
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
		rot, err := client.Rotation(ctx, id)
		if err != nil {
			return nil, err
		}
		c := rot.Counts
		var b strings.Builder
		for i, p := range rot.Parts {
			pc := p.Counts
			fmt.Fprintf(&b, "  %s %5.1f%% (%4d ok, %3d failed)", regions[i].name, done(pc), pc.Succeeded, pc.Failed)
		}
		fmt.Fprintf(w, "[%3.0fs] %5.1f%%%s  running %d, pending %d, retried %d\n",
			time.Since(start).Seconds(), done(c), b.String(), c.Running, c.Pending, c.Retried)
		if rot.Finished() {
			return rot, nil
		}
	}
}

// done is the share of servers that have ended, in percent.
func done(c rekey.Counts) float64 { return 100 * float64(c.Done()) / float64(max(c.Total, 1)) }

// demoSummary prints the outcome, region by region, and checks the report
// against each region's simulator, server by server.
func demoSummary(ctx context.Context, w io.Writer, client *rekey.Client, regions []*demoRegion, rot *rekey.Rotation, redisAddr string) error {
	c := rot.Counts
	fmt.Fprintf(w, "\nrotation %s %s in %s: %d succeeded, %d failed, %d skipped of %d\n", rot.ID, rot.State,
		rot.FinishedAt.Sub(rot.CreatedAt).Round(time.Second), c.Succeeded, c.Failed, c.Skipped, c.Total)
	byName := map[string]*demoRegion{"": regions[0]}
	bad := map[string]bool{}
	for _, r := range regions {
		byName[r.name] = r
		for _, b := range r.sim.BadServers() {
			bad[r.name+"/"+b.ServerID] = true
		}
	}
	// A failure is expected when the simulator made it so: a server it
	// fails permanently, or a transient job failure on every attempt.
	mismatches, codes, unexpected := 0, map[string]int{}, map[string]int{}
	err := client.Report(ctx, rot.ID, func(r rekey.Row) error {
		reg := byName[r.Region]
		kp, _ := reg.sim.Keypair(r.ServerID)
		if (r.Outcome == rekey.OutcomeSucceeded) != (kp == r.NewKeypair) {
			mismatches++
		}
		if r.Outcome == rekey.OutcomeFailed {
			codes[r.ErrorCode]++
			if !bad[reg.name+"/"+r.ServerID] && !(r.ErrorCode == cphsim.JobCodeTransient && r.Attempts == rot.MaxAttempts) {
				unexpected[r.ErrorCode]++
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for code, n := range codes {
		why := "one of the simulator's permanently bad servers: expected"
		switch {
		case unexpected[code] > 0:
			why = fmt.Sprintf("%d not made by the simulator's faults: look at the report", unexpected[code])
		case code == cphsim.JobCodeTransient:
			why = fmt.Sprintf("a transient job failure on all %d attempts: expected at 5 %% a try", rot.MaxAttempts)
		}
		fmt.Fprintf(w, "  failed with %s: %d (%s)\n", code, n, why)
	}
	for i, r := range regions {
		p := rot.Parts[i]
		s := r.sim.Stats()
		throttled := 0
		for _, n := range s.Throttled {
			throttled += n
		}
		fmt.Fprintf(w, "%-11s %s: %d succeeded, %d failed of %d; API calls: %d UpdateKeypair, %d ListJobs, %d ListServers pages, %d ShowServer; %d answered 429\n",
			r.name, p.State, p.Counts.Succeeded, p.Counts.Failed, p.Counts.Total, s.Calls[cphsim.APIUpdateKeypair], s.Calls[cphsim.APIListJobs],
			s.Calls[cphsim.APIListServers], s.Calls[cphsim.APIShowServer], throttled)
	}
	if mismatches > 0 {
		return fmt.Errorf("report disagrees with the simulators for %d servers", mismatches)
	}
	fmt.Fprintf(w, "report checked against both simulators: every succeeded server is on %s, no other is\n", rot.Keypair)
	fmt.Fprintf(w, "per-server report, while the demo runs: go run ./cmd/enqueue report --redis redis://%s %s\n", redisAddr, rot.ID)
	return nil
}
