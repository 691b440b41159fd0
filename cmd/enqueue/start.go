package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/targets"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// planFlags are the flags of a command that plans and starts a rotation
// (start and rollback).
type planFlags struct {
	chunkSize, maxAttempts int
	rotationID             string
	skipMatching           bool
	region, endpoint       string
	asJSON, dryRun         bool
	submitRate, waves      string
	readRate               string
	maxErrors              string
	jobLatency, retention  time.Duration
	pauseAfterWave, verify bool
}

func addPlanFlags(f *flags, idHelp string) *planFlags {
	p := &planFlags{}
	f.IntVar(&p.chunkSize, "chunk-size", tasks.DefaultChunkSize, "servers per UpdateKeypair call (1-100)")
	f.IntVar(&p.maxAttempts, "max-attempts", tasks.DefaultMaxAttempts, "attempts per server before a transient failure is final (1-20)")
	f.StringVar(&p.rotationID, "rotation-id", "", "rotation `id`; "+idHelp)
	f.BoolVar(&p.skipMatching, "skip-matching", true, "read current keypairs first: skip servers already on the target keypair, and record\neach server's old keypair (needed by rollback)")
	f.StringVar(&p.region, "region", "", "CPH `region` (for --discover and --skip-matching)")
	f.StringVar(&p.endpoint, "endpoint", "", "CPH endpoint `url`, overrides --region")
	f.BoolVar(&p.asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&p.dryRun, "dry-run", false, "read the fleet and print what would change and an ETA; write nothing, enqueue nothing")
	f.StringVar(&p.submitRate, "submit-rate", "10/s:1", "with --dry-run, the workers' fleet-wide UpdateKeypair `rate`, for the ETA")
	f.StringVar(&p.readRate, "read-rate", "20/s:5", "`rate` of this command's reads of the fleet (ListCloudPhoneServers pages), like the workers' --read-rate")
	f.DurationVar(&p.jobLatency, "job-latency", 30*time.Second, "with --dry-run, the expected CPH job `duration`, for the ETA")
	f.StringVar(&p.waves, "waves", "", "canary `waves`, like 1,10,10%,100%: each entry is that wave's own size, in servers or % of the\nservers to submit; what the list leaves over is one last wave. A wave starts when the previous\none has finished within the error budget. Default: one wave")
	f.BoolVar(&p.pauseAfterWave, "pause-after-wave", false, "pause after each wave until 'enqueue resume'")
	f.StringVar(&p.maxErrors, "max-errors", tasks.DefaultMaxErrors.String(), "error `budget`: servers (5) or % of the servers to submit (10%) that may fail for good;\none more halts the rotation: no new chunk is submitted, in-flight chunks finish")
	f.BoolVar(&p.verify, "verify", true, "read each server's keypair back after its job succeeded; a mismatch fails it ("+tasks.CodeVerifyMismatch+")")
	f.DurationVar(&p.retention, "retention", 30*24*time.Hour, "keep the rotation's records and report this long after it ends")
	return p
}

// client returns the CPH client when the command must read the fleet.
func (p *planFlags) client(e *env, discover bool) (*cph.Client, error) {
	if !discover && !p.skipMatching {
		if p.dryRun {
			return nil, usagef("--dry-run reads the current keypairs: drop --skip-matching=false")
		}
		return nil, nil
	}
	if p.region == "" && p.endpoint == "" {
		return nil, usagef("--discover, --skip-matching and --dry-run read the fleet: set --region or --endpoint (or --skip-matching=false)")
	}
	// The fleet is read page by page at the read rate: a throttled or
	// failed page is read again rather than failing the start.
	lim, err := ratelimit.ParseLimit(p.readRate)
	if err != nil {
		return nil, usagef("--read-rate: %v", err)
	}
	c, err := cph.NewClient(cph.Config{Region: p.region, Endpoint: p.endpoint, ReadRetries: 10, ReadRate: lim.Local(),
		ProjectID: e.getenv("HUAWEICLOUD_SDK_PROJECT_ID"), Credentials: cph.CredentialsFromEnv(e.getenv)})
	if err != nil {
		return nil, usageError{err}
	}
	return c, nil
}

// spec checks the flags and returns the rotation's spec without targets.
func (p *planFlags) spec(keypair string) (tasks.Spec, error) {
	waves, err := tasks.ParseWaves(p.waves)
	if err != nil {
		return tasks.Spec{}, usagef("--waves: %v", err)
	}
	budget, err := tasks.ParseSize(p.maxErrors)
	if err != nil {
		return tasks.Spec{}, usagef("--max-errors: %v", err)
	}
	if p.retention <= 0 {
		return tasks.Spec{}, usagef("--retention %s: want a positive duration", p.retention)
	}
	if p.jobLatency < 0 {
		return tasks.Spec{}, usagef("--job-latency %s: want a duration of 0 or more", p.jobLatency)
	}
	if _, err := ratelimit.ParseLimit(p.submitRate); err != nil {
		return tasks.Spec{}, usagef("--submit-rate: %v", err)
	}
	return tasks.Spec{ID: p.rotationID, Keypair: keypair, ChunkSize: p.chunkSize, MaxAttempts: p.maxAttempts,
		SkipMatching: p.skipMatching, Waves: waves, MaxErrors: &budget, SkipVerify: !p.verify,
		PauseAfterWave: p.pauseAfterWave, Retention: p.retention}, nil
}

// run plans the rotation and either prints the dry run or starts it.
func (p *planFlags) run(ctx context.Context, e *env, f *flags, spec tasks.Spec, client *cph.Client) error {
	var lister tasks.ServerLister
	if client != nil {
		lister = client
	}
	plan, err := tasks.MakePlan(ctx, spec, lister)
	if err != nil {
		var ce *cph.Error
		if errors.As(err, &ce) {
			return err
		}
		return usageError{err}
	}
	if p.dryRun {
		// Nothing connects to Redis: a dry run cannot write there.
		return printDryRun(e.stdout, p, plan)
	}
	rdb, store, _, err := f.connect()
	if err != nil {
		return err
	}
	defer rdb.Close()
	enq := asynq.NewClientFromRedisClient(rdb)
	defer enq.Close()
	st, err := tasks.Start(ctx, store, enq, plan, tasks.TaskOptions{Retention: spec.Retention}, time.Now())
	if err != nil {
		if errors.Is(err, tasks.ErrConflict) {
			return usageError{err}
		}
		return err
	}
	return printStarted(e.stdout, p.asJSON, st, plan)
}

func cmdStart(ctx context.Context, args []string, e *env) error {
	f := newFlags(e, "start", "[FILE|-]",
		"Starts a rotation: reads the target servers from FILE (or stdin with -), or discovers them with\n"+
			"--discover; validates all of it first (nothing is written if any line is bad); then freezes the\n"+
			"list into a rotation and enqueues the first wave's chunks. Prints the rotation id.\n"+
			"With --dry-run it prints what would change instead, and writes nothing.")
	keypair := f.String("keypair", "", "the keypair every server must end on (required)")
	format := f.String("format", "auto", "input `format`: auto, lines, csv or json")
	f.Env("format", "REKEY_INPUT_FORMAT") // REKEY_FORMAT is the report's
	discover := f.Bool("discover", false, "take the targets from ListCloudPhoneServers instead of a file")
	name := f.String("name", "", "with --discover, only servers whose name contains `text`")
	status := f.String("status", "", "with --discover, only servers in this `status` (5 = normal)")
	p := addPlanFlags(f, "default derived from the input, so re-running the same command enqueues nothing twice")
	nargs := 1
	if hasFlag(args, "discover") {
		nargs = 0
	}
	if err := f.parse(args, nargs); err != nil {
		return err
	}
	if *keypair == "" {
		return usagef("--keypair is required")
	}
	fmtArg, err := targets.ParseFormat(*format)
	if err != nil {
		return usagef("--format: %v", err)
	}
	var statusFilter *int
	if *status != "" {
		n, err := strconv.Atoi(*status)
		if err != nil {
			return usagef("--status %q: want a number (5 = normal)", *status)
		}
		statusFilter = &n
	}
	if !*discover && (*name != "" || statusFilter != nil) {
		return usagef("--name and --status filter discovery: use them with --discover")
	}
	spec, err := p.spec(*keypair)
	if err != nil {
		return err
	}
	client, err := p.client(e, *discover)
	if err != nil {
		return err
	}

	if *discover {
		// Offset paging repeats a server when the fleet changes while it is
		// listed: keep the first sighting.
		seen := map[string]bool{}
		err = client.ListServers(ctx, cph.ServerFilter{ServerName: *name, Status: statusFilter}, func(page []cph.Server) error {
			for _, s := range page {
				if !seen[s.ServerID] {
					seen[s.ServerID] = true
					spec.Targets = append(spec.Targets, tasks.Target{ServerID: s.ServerID})
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("discover servers: %w", err)
		}
		if len(spec.Targets) == 0 {
			return usagef("discovery found no servers")
		}
	} else if spec.Targets, err = readTargets(e, f.Arg(0), fmtArg); err != nil {
		return err
	}
	return p.run(ctx, e, f, spec, client)
}

func printStarted(w io.Writer, asJSON bool, st *tasks.Started, plan *tasks.Plan) error {
	if asJSON {
		return json.NewEncoder(w).Encode(map[string]any{
			"rotation": st.Rotation.ID, "created": st.Created, "enqueued": st.Enqueued,
			"servers": st.Rotation.Counts.Total, "chunks": st.Rotation.Chunks, "skipped": st.Rotation.Counts.Skipped,
			"not_found": len(plan.NotFound), "abnormal": len(plan.Abnormal), "state": st.Rotation.State,
			"waves": len(st.Rotation.Waves), "max_errors": st.Rotation.MaxErrors,
		})
	}
	_, err := fmt.Fprintln(w, st.Rotation.ID)
	return err
}

// dryRun is what --dry-run prints with --json.
type dryRun struct {
	DryRun          bool     `json:"dry_run"`
	Rotation        string   `json:"rotation"`
	Keypair         string   `json:"keypair"`
	Targets         int      `json:"targets"`
	ToChange        int      `json:"to_change"`
	AlreadyOnTarget int      `json:"already_on_target"`
	NotFound        int      `json:"not_found"`
	Abnormal        int      `json:"abnormal"`
	Chunks          int      `json:"chunks"`
	Waves           []int    `json:"waves"`
	MaxErrors       int      `json:"max_errors"`
	ETASeconds      float64  `json:"eta_seconds"`
	Lists           dryLists `json:"lists"`
}

type dryLists struct {
	ToChange        []string `json:"to_change"`
	AlreadyOnTarget []string `json:"already_on_target"`
	NotFound        []string `json:"not_found"`
	Abnormal        []string `json:"abnormal"`
}

// eta estimates a rotation's duration: its submissions at the fleet-wide
// submit rate, plus one job latency per wave, since each wave waits for
// the previous one's jobs to end.
func eta(chunks, waves int, submitRate ratelimit.Limit, jobLatency time.Duration) time.Duration {
	perSecond := float64(submitRate.Rate) / submitRate.Period.Seconds()
	submit := time.Duration(math.Ceil(float64(chunks)/perSecond*1000)) * time.Millisecond
	return submit + time.Duration(waves)*jobLatency
}

func printDryRun(w io.Writer, p *planFlags, plan *tasks.Plan) error {
	rate, _ := ratelimit.ParseLimit(p.submitRate) // checked by spec
	rot := plan.Rotation
	odd := map[string]bool{}
	ids := func(es []tasks.Entry) []string {
		out := make([]string, 0, len(es))
		for _, e := range es {
			out = append(out, e.ServerID)
		}
		return out
	}
	for _, e := range append(plan.NotFound, plan.Abnormal...) {
		odd[e.ServerID] = true
	}
	var change []string
	for _, c := range plan.Chunks {
		for _, e := range c {
			if !odd[e.ServerID] {
				change = append(change, e.ServerID)
			}
		}
	}
	d := dryRun{DryRun: true, Rotation: rot.ID, Keypair: rot.Keypair, ToChange: len(change),
		AlreadyOnTarget: len(plan.Skipped), NotFound: len(plan.NotFound), Abnormal: len(plan.Abnormal),
		Chunks: rot.Chunks, MaxErrors: rot.MaxErrors, Waves: []int{},
		Lists: dryLists{ToChange: change, AlreadyOnTarget: ids(plan.Skipped), NotFound: ids(plan.NotFound), Abnormal: ids(plan.Abnormal)}}
	d.Targets = plan.Servers() + len(plan.Skipped)
	if d.Lists.ToChange == nil {
		d.Lists.ToChange = []string{}
	}
	for _, wv := range rot.Waves {
		d.Waves = append(d.Waves, wv.Servers)
	}
	t := eta(rot.Chunks, len(rot.Waves), rate, p.jobLatency)
	d.ETASeconds = t.Seconds()
	if p.asJSON {
		return json.NewEncoder(w).Encode(d)
	}
	waves := make([]string, len(d.Waves))
	for i, n := range d.Waves {
		waves[i] = strconv.Itoa(n)
	}
	fmt.Fprintf(w, "dry run of rotation %s to keypair %s: nothing written, nothing enqueued\n", rot.ID, rot.Keypair)
	fmt.Fprintf(w, "  targets               %6d\n", d.Targets)
	fmt.Fprintf(w, "  to change             %6d\n", d.ToChange)
	fmt.Fprintf(w, "  already on target     %6d  (skipped)\n", d.AlreadyOnTarget)
	fmt.Fprintf(w, "  not found             %6d  (submitted anyway: the API's answer is reported)\n", d.NotFound)
	fmt.Fprintf(w, "  not in a normal state %6d  (submitted anyway: their jobs will likely fail)\n", d.Abnormal)
	fmt.Fprintf(w, "  chunks                %6d  of up to %d servers, in %d wave(s): %s\n", d.Chunks, rot.ChunkSize, len(d.Waves), strings.Join(waves, ", "))
	fmt.Fprintf(w, "  error budget          %6d  failed servers (--max-errors %s)\n", d.MaxErrors, p.maxErrors)
	fmt.Fprintf(w, "  ETA                   ~%s  (%d chunks at %s + %d wave(s) x %s job latency)\n",
		t.Round(time.Second), d.Chunks, rate, len(d.Waves), p.jobLatency)
	return nil
}

// readTargets reads and validates the target list; any problem is bad input.
func readTargets(e *env, path string, format targets.Format) ([]tasks.Target, error) {
	var r io.Reader = e.stdin
	if path != "-" {
		fh, err := os.Open(path)
		if err != nil {
			return nil, usageError{err}
		}
		defer fh.Close()
		r = fh
	}
	ts, err := targets.Parse(r, format)
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", displayName(path), err)}
	}
	out := make([]tasks.Target, len(ts))
	for i, t := range ts {
		out[i] = tasks.Target{ServerID: t.ServerID, Keypair: t.KeypairName}
	}
	return out, nil
}

func displayName(path string) string {
	if path == "-" {
		return "stdin"
	}
	return path
}

// hasFlag reports whether args set boolean flag name to true, before flag
// parsing decides how many arguments the command takes.
func hasFlag(args []string, name string) bool {
	for _, a := range args {
		a = strings.TrimLeft(a, "-")
		if a == name || a == name+"=true" {
			return true
		}
	}
	return false
}
