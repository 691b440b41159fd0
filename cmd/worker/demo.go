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
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/redisurl"
	"github.com/cph-rekey/cph-rekey/rekey"
)

// Demo credentials: the simulator accepts these and nothing else.
const (
	demoAK      = "DEMOACCESSKEY0000000"
	demoSK      = "demo-secret-key-not-a-real-one"
	demoProject = "0123456789abcdef0123456789abcdef"
	demoKeypair = "kp-demo-2026"
)

// runDemo runs a whole rotation in one process: miniredis, the CPH
// simulator with realistic faults, a worker, a rotation of the simulated
// fleet, progress on stdout and the web UI.
func runDemo(ctx context.Context, c *config, stdout, stderr io.Writer) error {
	mr := miniredis.NewMiniRedis()
	if err := mr.Start(); err != nil {
		return fmt.Errorf("demo redis: %w", err)
	}
	defer mr.Close()

	sim := cphsim.New(cphsim.Options{
		ProjectID:          demoProject,
		AccessKey:          demoAK,
		SecretKey:          demoSK,
		Servers:            c.demoServers,
		JobLatency:         2 * time.Second,
		JobJitter:          time.Second,
		UpdateKeypairQuota: 5,
		ListJobsQuota:      30,
		ReadQuota:          20,
		Error5xxRate:       0.02,
		JobFailRate:        0.05,
		BadServerRate:      0.01,
		Seed:               1,
	})
	simLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fmt.Errorf("demo simulator: %w", err)
	}
	simSrv := &http.Server{Handler: sim, ReadHeaderTimeout: 10 * time.Second}
	go simSrv.Serve(simLn)
	defer simSrv.Close()

	// The demo's worker is the real one, pointed at the embedded parts.
	if c.redis, err = redisurl.Parse("redis://"+mr.Addr(), redisurl.Options{}); err != nil {
		return err
	}
	c.cph = cph.Config{Endpoint: "http://" + simLn.Addr().String(), ProjectID: demoProject,
		Credentials: cph.Credentials{AccessKey: demoAK, SecretKey: demoSK}}
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

	// Start the rotation the way `enqueue start --discover` does: through
	// rekey, discovery and the plan paging through the read quota at the
	// worker's read rate.
	rdb := redis.NewClient(&redis.Options{Addr: mr.Addr()})
	defer rdb.Close()
	rr := c.readRate.Default
	client, err := rekey.NewClient(rdb, rekey.Options{Namespace: string(c.namespace), TaskTimeout: c.pipeline.Tasks.Timeout,
		CPH:      &rekey.CPH{Endpoint: c.cph.Endpoint, ProjectID: demoProject, AccessKey: demoAK, SecretKey: demoSK},
		ReadRate: rekey.Rate{Events: rr.Rate, Per: rr.Period, Burst: rr.Burst}})
	if err != nil {
		return err
	}
	defer client.Close()
	st, err := client.Start(ctx, rekey.Request{Keypair: demoKeypair, Discover: &rekey.Discover{}, Actor: "demo"})
	if err != nil {
		return fmt.Errorf("demo rotation: %w", err)
	}
	fmt.Fprintf(stdout, "rotation %s: %d servers in %d chunks → keypair %s\n", st.Rotation.ID, st.Rotation.Counts.Total, st.Rotation.Chunks, demoKeypair)
	if console != "" {
		fmt.Fprintf(stdout, "its page:      %s%s (pause, resume or cancel it there)\n", console, st.Rotation.ID)
	}
	fmt.Fprintf(stdout, "simulated faults: 2%% HTTP 5xx, 5%% transient job failures, 1%% permanently bad servers, and a CPH quota of\n"+
		"5 UpdateKeypair/s under the configured 10/s: the first 429s teach the fleet limiter the real quota\n\n")

	rot, err := watchDemo(ctx, client, st.Rotation.ID, stdout)
	if err != nil {
		return err
	}
	if err := demoSummary(ctx, stdout, client, sim, rot, mr.Addr()); err != nil {
		return err
	}
	if !c.demoExit {
		fmt.Fprintf(stdout, "\nThe web UI stays up; press Ctrl-C to stop.\n")
		<-ctx.Done()
	}
	stopWorker()
	return <-workerDone
}

func watchDemo(ctx context.Context, client *rekey.Client, id string, w io.Writer) (*rekey.Rotation, error) {
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
		fmt.Fprintf(w, "[%3.0fs] %5.1f%%  succeeded %d  failed %d  skipped %d  running %d (of which verifying %d)  pending %d  (retried %d)\n",
			time.Since(start).Seconds(), 100*float64(c.Done())/float64(max(c.Total, 1)), c.Succeeded, c.Failed, c.Skipped,
			c.Running, c.Verifying, c.Pending, c.Retried)
		if rot.Finished() {
			return rot, nil
		}
	}
}

// demoSummary prints the outcome and checks the report against the
// simulator's own state, server by server.
func demoSummary(ctx context.Context, w io.Writer, client *rekey.Client, sim *cphsim.Sim, rot *rekey.Rotation, redisAddr string) error {
	c := rot.Counts
	fmt.Fprintf(w, "\nrotation %s %s in %s: %d succeeded, %d failed, %d skipped of %d\n", rot.ID, rot.State,
		rot.FinishedAt.Sub(rot.CreatedAt).Round(time.Second), c.Succeeded, c.Failed, c.Skipped, c.Total)
	bad := map[string]bool{}
	for _, b := range sim.BadServers() {
		bad[b.ServerID] = true
	}
	// A failure is expected when the simulator made it so: a server it
	// fails permanently, or a transient job failure on every attempt.
	mismatches, codes, unexpected := 0, map[string]int{}, map[string]int{}
	err := client.Report(ctx, rot.ID, func(r rekey.Row) error {
		kp, _ := sim.Keypair(r.ServerID)
		if (r.Outcome == rekey.OutcomeSucceeded) != (kp == r.NewKeypair) {
			mismatches++
		}
		if r.Outcome == rekey.OutcomeFailed {
			codes[r.ErrorCode]++
			if !bad[r.ServerID] && !(r.ErrorCode == cphsim.JobCodeTransient && r.Attempts == rot.MaxAttempts) {
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
	s := sim.Stats()
	throttled := 0
	for _, n := range s.Throttled {
		throttled += n
	}
	fmt.Fprintf(w, "API calls: %d UpdateKeypair, %d ListJobs, %d ListServers pages (plan and verification), %d ShowServer; %d answered 429\n",
		s.Calls[cphsim.APIUpdateKeypair], s.Calls[cphsim.APIListJobs], s.Calls[cphsim.APIListServers], s.Calls[cphsim.APIShowServer], throttled)
	if mismatches > 0 {
		return fmt.Errorf("report disagrees with the simulator for %d servers", mismatches)
	}
	fmt.Fprintf(w, "report checked against the simulator: every succeeded server is on %s, no other is\n", rot.Keypair)
	fmt.Fprintf(w, "per-server report, while the demo runs: go run ./cmd/enqueue report --redis redis://%s %s\n", redisAddr, rot.ID)
	return nil
}
