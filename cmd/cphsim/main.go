// Command cphsim serves the CPH API simulator (internal/cph/cphsim) on a
// local port, for tests in other processes, the benchmarks and manual runs:
//
//	cphsim --ak AK --sk SK --project-id 0123456789abcdef0123456789abcdef --servers 20000 \
//	       --quota-update 10 --quota-list 20 --job-latency 2s --job-jitter 1s \
//	       --create-rate 5 --delete-rate 1 --latency 300ms --latency-jitter 200ms
//
// The first line on stdout is the base URL it listens on (with --addr
// 127.0.0.1:0 the port is chosen by the system), so a parent process can
// read it. Every flag also reads an environment variable CPHSIM_<NAME>
// (--help lists them). It stops gracefully on SIGINT or SIGTERM. Exit
// codes: 0 after a clean stop, 1 when serving fails, 2 for bad flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/envflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr))
}

// config is the parsed command line.
type config struct {
	addr      string
	region    string
	fleetFile string
	keypairs  string
	badKind   string
	deny      string
	logFormat string
	opts      cphsim.Options
}

func parse(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{}
	o := &c.opts
	fs := envflag.New("cphsim", "CPHSIM_")
	fs.SetOutput(stderr)
	fs.FlagSet.Usage = func() {
		fmt.Fprintf(stderr, "Usage: cphsim --ak AK --sk SK --project-id ID [flags]\n\n"+
			"Serves a simulated Huawei Cloud Phone API, its Key Pair Service and IAM's project list\n"+
			"(GET /v3/auth/projects). The first stdout line is its base URL.\n"+
			"GET /_sim/stats, /_sim/servers and /_sim/deleted, PUT /_sim/quota, POST /_sim/churn and\n"+
			"POST /_sim/deny are unauthenticated test aids.\n\nFlags:\n")
		fs.PrintUsage(stderr)
	}
	fs.StringVar(&c.addr, "addr", "127.0.0.1:0", "listen address (port 0: any free port)")
	fs.StringVar(&o.AccessKey, "ak", "", "the access key (AK) accepted (required)")
	fs.StringVar(&o.SecretKey, "sk", "", "the secret key (SK) of --ak (required)")
	fs.StringVar(&o.ProjectID, "project-id", "", "the project id served (required)")
	fs.StringVar(&c.region, "region", "cn-north-4", "the `region` the project is in, its name in IAM's project list (GET /v3/auth/projects)")
	fs.StringVar(&o.AuthToken, "auth-token", "", "an IAM token also accepted in X-Auth-Token (empty: none)")
	fs.IntVar(&o.Servers, "servers", 100, "size of the generated fleet (ignored with --fleet-file)")
	fs.StringVar(&c.fleetFile, "fleet-file", "", "load the fleet from this JSON or .csv file instead of generating one")
	fs.StringVar(&c.keypairs, "keypairs", "", "comma-separated keypair names KPS holds in every project (empty: every name exists until deleted through KPS)")
	fs.Float64Var(&o.UpdateKeypairQuota, "quota-update", 0, "UpdateKeypair requests per second (0: unlimited)")
	fs.Float64Var(&o.ListJobsQuota, "quota-list", 0, "ListJobs requests per second (0: unlimited)")
	fs.Float64Var(&o.ReadQuota, "quota-read", 0, "requests per second of each read API: ShowJob, ListServers, ShowServer (0: unlimited)")
	fs.IntVar(&o.QuotaBurst, "quota-burst", 0, "token bucket size of every quota (0: the rate rounded up)")
	fs.BoolVar(&o.LegacyThrottleCode, "legacy-throttle-code", false, "answer 429 with APIG.0308 instead of APIGW.0308")
	fs.BoolVar(&o.RetryAfter, "retry-after", false, "add a Retry-After header to 429 answers")
	fs.BoolVar(&o.HideQuota, "hide-quota", false, "leave the quota (limit:N,time:…) out of 429 messages")
	fs.DurationVar(&o.JobLatency, "job-latency", 2*time.Second, "mean time from a job's creation to its end")
	fs.DurationVar(&o.JobJitter, "job-jitter", 0, "job latency is uniform in latency±jitter")
	fs.Float64Var(&o.JobFailRate, "fail-rate", 0, "fraction of jobs failing with the transient "+cphsim.JobCodeTransient)
	fs.Float64Var(&o.Error5xxRate, "5xx-rate", 0, "fraction of requests answered 500/503/504")
	fs.Float64Var(&o.DropRate, "drop-rate", 0, "fraction of requests whose connection is closed unanswered")
	fs.BoolVar(&o.DropBeforeCommit, "drop-before-commit", false, "a dropped UpdateKeypair creates no jobs (default: jobs are created, the answer is lost)")
	fs.Float64Var(&o.SlowRate, "slow-rate", 0, "fraction of requests delayed by --slow-delay")
	fs.DurationVar(&o.SlowDelay, "slow-delay", time.Second, "delay of a slow request")
	fs.Float64Var(&o.BadServerRate, "bad-server-rate", 0, "fraction of servers that always fail")
	fs.StringVar(&c.badKind, "bad-server-kind", "mixed", "how bad servers fail: abnormal (job fails "+cphsim.JobCodeServerAbnormal+"), rejected (CPS.0016 in the answer) or mixed")
	fs.BoolVar(&o.LieOnSuccess, "lie-on-success", false, "succeeded jobs leave the keypair unchanged")
	fs.Float64Var(&o.CreateRate, "create-rate", 0, "servers created per second while serving, on top of the list (0: none)")
	fs.Float64Var(&o.DeleteRate, "delete-rate", 0, "servers deleted per second while serving, drawn at random (0: none)")
	fs.StringVar(&c.deny, "deny", "", "comma-separated APIs answered 403 CPS.0001, as an IAM policy without them (e.g. ListJobs,ShowServer)")
	fs.DurationVar(&o.Latency, "latency", 0, "real time every API answer waits (e.g. 300ms)")
	fs.DurationVar(&o.LatencyJitter, "latency-jitter", 0, "answer latency is uniform in latency±jitter")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of ids, bad servers, latencies and faults")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format on stderr: text or json")
	if err := fs.Parse(args, getenv); err != nil {
		return nil, err
	}
	for _, r := range []struct {
		name string
		v    float64
	}{
		{"fail-rate", o.JobFailRate}, {"5xx-rate", o.Error5xxRate}, {"drop-rate", o.DropRate},
		{"slow-rate", o.SlowRate}, {"bad-server-rate", o.BadServerRate},
	} {
		if !(r.v >= 0 && r.v <= 1) {
			return nil, fmt.Errorf("--%s %v: want a fraction in [0, 1]", r.name, r.v)
		}
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	var missing []string
	for _, f := range []struct{ name, v string }{{"ak", o.AccessKey}, {"sk", o.SecretKey}, {"project-id", o.ProjectID}} {
		if f.v == "" {
			missing = append(missing, fmt.Sprintf("--%s (or %s)", f.name, fs.EnvName(f.name)))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	switch c.badKind {
	case "mixed":
		o.BadServerKind = cphsim.BadMixed
	case "abnormal":
		o.BadServerKind = cphsim.BadAbnormal
	case "rejected":
		o.BadServerKind = cphsim.BadRejected
	default:
		return nil, fmt.Errorf("--bad-server-kind %q: want mixed, abnormal or rejected", c.badKind)
	}
	if !regionName.MatchString(c.region) {
		return nil, fmt.Errorf("--region %q: want a region name like cn-north-4", c.region)
	}
	if c.logFormat != "text" && c.logFormat != "json" {
		return nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
	}
	if c.deny != "" {
		for _, a := range strings.Split(c.deny, ",") {
			if a = strings.TrimSpace(a); a != "" {
				o.Deny = append(o.Deny, cphsim.API(a))
			}
		}
		for _, a := range o.Deny {
			if !slices.Contains(cphsim.APIs(), a) {
				return nil, fmt.Errorf("--deny %q: want APIs among %s", c.deny, apiNames())
			}
		}
	}
	if c.keypairs != "" {
		for _, k := range strings.Split(c.keypairs, ",") {
			if k = strings.TrimSpace(k); k != "" {
				o.Keypairs = append(o.Keypairs, k)
			}
		}
	}
	if c.fleetFile != "" {
		fleet, err := cphsim.LoadFleet(c.fleetFile)
		if err != nil {
			return nil, err
		}
		o.Fleet = fleet
	}
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("invalid settings: %w", err)
	}
	return c, nil
}

var regionName = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)+$`)

// apiNames lists the API names --deny takes.
func apiNames() string {
	var names []string
	for _, a := range cphsim.APIs() {
		names = append(names, string(a))
	}
	return strings.Join(names, ", ")
}

// run serves until ctx ends and returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	c, err := parse(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "cphsim: %v\n", err)
		return 2
	}
	var h slog.Handler = slog.NewTextHandler(stderr, nil)
	if c.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, nil)
	}
	log := slog.New(h)

	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		log.Error("listen", "addr", c.addr, "err", err)
		return 1
	}
	if ip := ln.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
		log.Warn("listening beyond loopback: /_sim endpoints are unauthenticated", "addr", ln.Addr().String())
	}
	sim := cphsim.New(c.opts)
	// The cloud adds IAM's project list: the project, named after its
	// region, and the global MOS.
	cloud, err := cphsim.NewCloud(cphsim.Place{Region: c.region, Sim: sim})
	if err != nil {
		log.Error("serve", "err", err)
		return 1
	}
	srv := &http.Server{Handler: cloud, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "http://%s\n", ln.Addr())
	servers := c.opts.Servers
	if len(c.opts.Fleet) > 0 {
		servers = len(c.opts.Fleet)
	}
	log.Info("cphsim serving", "url", "http://"+ln.Addr().String(), "region", c.region, "project", c.opts.ProjectID, "servers", servers,
		"quota_update", c.opts.UpdateKeypairQuota, "quota_list", c.opts.ListJobsQuota, "quota_read", c.opts.ReadQuota,
		"create_rate", c.opts.CreateRate, "delete_rate", c.opts.DeleteRate, "deny", c.opts.Deny, "latency", c.opts.Latency)

	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		log.Error("serve", "err", err)
		return 1
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		log.Error("shutdown", "err", err)
		return 1
	}
	st := sim.Stats()
	log.Info("cphsim stopped", "calls", st.Calls, "throttled", st.Throttled, "jobs_created", st.JobsCreated,
		"servers_created", st.ServersCreated, "servers_deleted", st.ServersDeleted)
	return 0
}
