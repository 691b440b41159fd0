package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cph-rekey/cph-rekey/rekey"
)

// planFlags are the flags of a command that plans and starts a rotation
// (start and rollback).
type planFlags struct {
	chunkSize, maxAttempts int
	rotationID             string
	skipMatching           bool
	region                 string
	endpoints              []string
	regionOrder            string
	maxConcurrentRegions   int
	maxErrorsTotal         string
	onRegionHalt           string
	kpsEndpoint            string
	skipKeypairCheck       bool
	asJSON, dryRun         bool
	submitRate, waves      string
	readRate               string
	maxErrors              string
	jobLatency, retention  time.Duration
	pauseAfterWave, verify bool
	quiet                  bool
	progressInterval       time.Duration
	// prepare, when set, runs once the client is made, before the plan;
	// it may add to the request.
	prepare func(context.Context, *rekey.Client, *rekey.Request) error
}

func addPlanFlags(f *flags, idHelp string) *planFlags {
	p := &planFlags{}
	f.addActor()
	f.IntVar(&p.chunkSize, "chunk-size", rekey.DefaultChunkSize, "servers per UpdateKeypair call (1-100)")
	f.IntVar(&p.maxAttempts, "max-attempts", rekey.DefaultMaxAttempts, "attempts per server before a transient failure is final (1-20)")
	f.StringVar(&p.rotationID, "rotation-id", "", "rotation `id`; "+idHelp)
	f.BoolVar(&p.skipMatching, "skip-matching", true, "read current keypairs first: skip servers already on the target keypair, and record\neach server's old keypair (needed by rollback)")
	f.StringVar(&p.region, "region", "", "default CPH `region`: of targets that name none (a region column or field), --discover and --skip-matching")
	f.Func("endpoint", "CPH endpoint: a plain `url` overrides --region's; REGION=URL sets another region's, before the SDK's\nHUAWEICLOUD_SDK_REGION_CPH_{REGION} (repeat the flag, or separate with commas in the variable)", func(v string) error {
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e != "" {
				p.endpoints = append(p.endpoints, e)
			}
		}
		return nil
	})
	f.StringVar(&p.regionOrder, "region-order", "", "`regions` whose parts go first, in this order (a canary region first), e.g. cn-north-4,cn-east-3;\nthe others follow in the order they appear in the targets")
	f.IntVar(&p.maxConcurrentRegions, "max-concurrent-regions", 0, "how many (region, project) parts run at once, in --region-order; the others wait and start\nas parts finish or halt (0: all at once)")
	f.StringVar(&p.maxErrorsTotal, "max-errors-total", "", "error `budget` of a rotation across (region, project) parts as a whole: servers (20) or % of the\nservers its parts submit (5%); one more failed server across them halts every part. --max-errors\nstays each part's own, as StackSets' failure tolerance is a region's. Default: none")
	f.StringVar(&p.onRegionHalt, "on-region-halt", string(rekey.HaltAll), "the other parts' `policy` when one halts (past its --max-errors, or refused by the API): halt\n(every part halts: in-flight calls end, no waiting part starts, until resume or cancel; as\nStackSets stop at a region past its failure tolerance) or continue (the others finish)")
	f.StringVar(&p.kpsEndpoint, "kps-endpoint", "", "Key Pair Service endpoint `url` of --region, for the keypair check. Default: the SDK's\nHUAWEICLOUD_SDK_REGION_KPS_{REGION} when set, else the region's CPH endpoint when given (--endpoint\nor HUAWEICLOUD_SDK_REGION_CPH_{REGION}: a proxy or the simulator serving both), else https://kms.{region}.myhuaweicloud.com; other regions likewise")
	f.BoolVar(&p.skipKeypairCheck, "skip-keypair-check", false, "do not check first that the keypair exists in the KPS of every (region, project) of the\nrotation (ShowKeypair): for credentials without the IAM action "+rekey.KeypairReadAction)
	f.BoolVar(&p.asJSON, "json", false, "print the result as JSON")
	f.BoolVar(&p.dryRun, "dry-run", false, "read the fleet and print what would change and an ETA; write nothing, enqueue nothing")
	f.StringVar(&p.submitRate, "submit-rate", "10/s:1", "with --dry-run, the workers' fleet-wide UpdateKeypair `rate`, for the ETA")
	f.StringVar(&p.readRate, "read-rate", "20/s:5", "`rate` of this command's reads of the fleet (ListCloudPhoneServers pages), like the workers' --read-rate")
	f.DurationVar(&p.jobLatency, "job-latency", 30*time.Second, "with --dry-run, the expected CPH job `duration`, for the ETA")
	f.StringVar(&p.waves, "waves", "", "canary `waves`, like 1,10,10%,100%: each entry is that wave's own size, in servers or % of the\nservers to submit; what the list leaves over is one last wave. A wave starts when the previous\none has finished within the error budget. Default: one wave")
	f.BoolVar(&p.pauseAfterWave, "pause-after-wave", false, "pause after each wave until 'enqueue resume'")
	f.StringVar(&p.maxErrors, "max-errors", rekey.DefaultMaxErrors().String(), "error `budget`: servers (5) or % of the servers to submit (10%) that may fail for good;\none more halts the rotation: no new chunk is submitted, in-flight chunks finish")
	f.BoolVar(&p.verify, "verify", true, "read each server's keypair back after its job succeeded; a mismatch fails it ("+rekey.CodeVerifyMismatch+")")
	f.DurationVar(&p.retention, "retention", rekey.DefaultRetention, "keep the rotation's records and report this long after it ends")
	f.BoolVar(&p.quiet, "quiet", false, "do not show the progress of the fleet's reads on stderr")
	f.DurationVar(&p.progressInterval, "progress-interval", 10*time.Second, "when stderr is not a terminal, write the progress of the fleet's reads this often\n(on a terminal it is one line, redrawn in place)")
	return p
}

// progress returns what shows the plan's progress on stderr (nothing with
// --quiet) and tells what an interrupted command left.
func (p *planFlags) progress(e *env) *planProgress {
	return &planProgress{line: liveLine{w: e.stderr, terminal: e.errTerminal, width: e.errWidth},
		interval: p.progressInterval, now: time.Now, quiet: p.quiet}
}

// options return the rekey client's options: with the CPH endpoint and
// credentials when the command must read the fleet.
func (p *planFlags) options(e *env, discover bool) (rekey.Options, error) {
	if !discover && !p.skipMatching {
		if p.dryRun {
			return rekey.Options{}, usagef("--dry-run reads the current keypairs: drop --skip-matching=false")
		}
		if p.skipKeypairCheck || p.region == "" && len(p.endpoints) == 0 {
			// Without a region there is no KPS to ask: the keypair is
			// checked by CPH itself, and a missing one halts the rotation.
			return rekey.Options{}, nil
		}
	}
	c, err := p.cph(e)
	if err != nil {
		return rekey.Options{}, err
	}
	if p.region == "" && c.Endpoint == "" {
		return rekey.Options{}, usagef("--discover, --skip-matching and --dry-run read the fleet: set --region or --endpoint (or --skip-matching=false)")
	}
	rr, err := rekey.ParseRate(p.readRate)
	if err != nil {
		return rekey.Options{}, usagef("--read-rate: %v", err)
	}
	return rekey.Options{CPH: c, ReadRate: rr}, nil
}

// cph is the CPH endpoints (--region, --endpoint) and the credentials of
// the environment.
func (p *planFlags) cph(e *env) (*rekey.CPH, error) {
	plain, perRegion, err := rekey.ParseEndpoints(p.endpoints)
	if err != nil {
		return nil, usagef("--endpoint: %v", err)
	}
	c := rekey.CPHFromEnv(e.getenv)
	c.Region, c.Endpoint, c.Endpoints = p.region, plain, perRegion
	c.KPSEndpoint = p.kpsEndpoint
	return c, nil
}

// request checks the flags and returns the rotation's request without
// targets.
func (p *planFlags) request(keypair string) (rekey.Request, error) {
	waves, err := rekey.ParseWaves(p.waves)
	if err != nil {
		return rekey.Request{}, usagef("--waves: %v", err)
	}
	budget, err := rekey.ParseSize(p.maxErrors)
	if err != nil {
		return rekey.Request{}, usagef("--max-errors: %v", err)
	}
	// A Request's zero values are defaults; a flag's zero is a mistake.
	if p.chunkSize < 1 {
		return rekey.Request{}, usagef("chunk size %d: want 1-%d", p.chunkSize, rekey.MaxChunkSize)
	}
	if p.maxAttempts < 1 {
		return rekey.Request{}, usagef("max attempts %d: want 1-20", p.maxAttempts)
	}
	if p.retention <= 0 {
		return rekey.Request{}, usagef("--retention %s: want a positive duration", p.retention)
	}
	if p.progressInterval <= 0 {
		return rekey.Request{}, usagef("--progress-interval %s: want a positive duration", p.progressInterval)
	}
	if p.jobLatency < 0 {
		return rekey.Request{}, usagef("--job-latency %s: want a duration of 0 or more", p.jobLatency)
	}
	if _, err := rekey.ParseRate(p.submitRate); err != nil {
		return rekey.Request{}, usagef("--submit-rate: %v", err)
	}
	if p.maxConcurrentRegions < 0 {
		return rekey.Request{}, usagef("--max-concurrent-regions %d: want 0 (all) or more", p.maxConcurrentRegions)
	}
	var total *rekey.Size
	if p.maxErrorsTotal != "" {
		b, err := rekey.ParseSize(p.maxErrorsTotal)
		if err != nil {
			return rekey.Request{}, usagef("--max-errors-total: %v", err)
		}
		total = &b
	}
	onHalt, err := rekey.ParseHaltPolicy(p.onRegionHalt)
	if err != nil {
		return rekey.Request{}, usagef("--on-region-halt: %v", err)
	}
	var order []string
	for _, r := range strings.Split(p.regionOrder, ",") {
		if r = strings.TrimSpace(r); r != "" {
			order = append(order, r)
		}
	}
	return rekey.Request{ID: p.rotationID, Keypair: keypair, ChunkSize: p.chunkSize, MaxAttempts: p.maxAttempts,
		NoSkipMatching: !p.skipMatching, Waves: waves, MaxErrors: &budget, NoVerify: !p.verify,
		PauseAfterWave: p.pauseAfterWave, Retention: p.retention, RegionOrder: order, MaxConcurrentRegions: p.maxConcurrentRegions,
		MaxErrorsTotal: total, OnRegionHalt: onHalt, SkipKeypairCheck: p.skipKeypairCheck}, nil
}

// run plans the rotation and either prints the dry run or starts it.
func (p *planFlags) run(ctx context.Context, e *env, f *flags, req rekey.Request, discover bool) error {
	opts, err := p.options(e, discover)
	if err != nil {
		return err
	}
	rdb, c, err := f.connect(opts)
	if err != nil {
		return err
	}
	defer rdb.Close()
	defer c.Close()
	if p.prepare != nil {
		if err := p.prepare(ctx, c, &req); err != nil {
			return usage(err)
		}
	}
	prog := p.progress(e)
	req.Progress = prog.show
	if p.dryRun {
		// Plan writes nothing and sends Redis no command.
		plan, err := c.Plan(ctx, req)
		if err != nil {
			return usage(prog.interrupted(ctx, err, true))
		}
		tellSkipped(e.stderr, plan)
		return printDryRun(e.stdout, p, plan)
	}
	st, err := c.Start(ctx, req)
	if err != nil {
		return usage(prog.interrupted(ctx, err, false))
	}
	tellSkipped(e.stderr, st.Plan)
	return printStarted(e.stdout, p.asJSON, st)
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
	regions := f.String("regions", "", "with --discover, the `regions` to discover in, comma-separated: each one's own project (the one\nnamed after it), or with --projects or --all-projects only those regions' projects")
	projects := f.String("projects", "", "with --discover, the project `ids` to discover in, comma-separated (32 hex digits each); a project's\nregion comes from its IAM name, {region} or {region}_{suffix}")
	allProjects := f.Bool("all-projects", false, "with --discover, discover in every project the credentials reach in a known region, as IAM lists\nthem (GET /v3/auth/projects on HUAWEICLOUD_SDK_IAM_ENDPOINT, default https://iam.myhuaweicloud.com);\nprojects in no region (such as MOS) are skipped, with a line on stderr")
	generate := f.Bool("generate-keypair", false, "generate an ed25519 keypair here, write its private key to --private-key-out and import its\npublic key as --keypair into the KPS of every (region, project) of the targets (needs\n"+rekey.KeypairImportAction+"), then start")
	keyOut := f.String("private-key-out", "", "with --generate-keypair, the `file` the private key is written to (mode 0600; never overwritten)")
	scope := f.String("keypair-scope", rekey.ScopeDomain, "with --generate-keypair, the KPS `scope` of the imported keypair: domain (every IAM user of the\naccount) or user (the importing user only)")
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
	ctx, err := f.withActor(ctx)
	if err != nil {
		return err
	}
	if err := checkGenerate(p, *generate, *keyOut, *scope); err != nil {
		return err
	}
	fmtArg, err := rekey.ParseFormat(*format)
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
	d, err := discoverFlags(*discover, *regions, *projects, *allProjects)
	if err != nil {
		return err
	}
	req, err := p.request(*keypair)
	if err != nil {
		return err
	}
	// The fleet is needed before the list is read: say so first.
	if _, err := p.options(e, *discover); err != nil {
		return err
	}
	if *discover {
		d.NameContains, d.Status = *name, statusFilter
		req.Discover = d
	} else if req.Targets, err = p.readTargets(e, f.Arg(0), fmtArg); err != nil {
		return err
	}
	if *generate {
		p.prepare = func(ctx context.Context, c *rekey.Client, r *rekey.Request) error {
			places, err := generateKeypair(ctx, e, c, *keypair, *keyOut, *scope, rekey.KeypairImport{Targets: r.Targets, Discover: r.Discover})
			r.KeypairImported = places
			return err
		}
	}
	return p.run(ctx, e, f, req, *discover)
}

// discoverFlags checks the flags that say where --discover looks and
// returns its Discover (nil without --discover). The values themselves
// (regions, project ids) are checked by rekey, with the known regions.
func discoverFlags(discover bool, regions, projects string, all bool) (*rekey.Discover, error) {
	d := &rekey.Discover{Regions: splitList(regions), Projects: splitList(projects), AllProjects: all}
	switch {
	case !discover && (len(d.Regions) > 0 || len(d.Projects) > 0 || all):
		return nil, usagef("--regions, --projects and --all-projects say where --discover looks: use them with --discover (a target list names each target's region and project_id)")
	case len(d.Projects) > 0 && all:
		return nil, usagef("--projects and --all-projects: name the projects, or take every one the credentials reach, not both")
	case !discover:
		return nil, nil
	}
	return d, nil
}

// splitList splits a comma-separated flag value, dropping empty entries.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

// checkGenerate checks the flags of --generate-keypair.
func checkGenerate(p *planFlags, generate bool, keyOut, scope string) error {
	switch {
	case !generate && keyOut != "":
		return usagef("--private-key-out goes with --generate-keypair")
	case !generate:
		return nil
	case keyOut == "":
		return usagef("--generate-keypair needs --private-key-out FILE: the private key is written there, and nowhere else")
	case keyOut == "-":
		return usagef("--private-key-out -: stdout carries the rotation id; give a file")
	case p.dryRun:
		return usagef("--generate-keypair imports a keypair, which a dry run does not: drop --dry-run, or generate the keypair first")
	case p.skipKeypairCheck:
		return usagef("--generate-keypair checks the imported keypair: drop --skip-keypair-check")
	case p.region == "" && len(p.endpoints) == 0:
		return usagef("--generate-keypair imports the keypair into the project's KPS: set --region or --endpoint")
	case scope != rekey.ScopeDomain && scope != rekey.ScopeUser:
		return usagef("--keypair-scope %q: want %s or %s", scope, rekey.ScopeDomain, rekey.ScopeUser)
	}
	if _, err := os.Lstat(keyOut); err == nil {
		return usagef("--private-key-out %s exists: it is never overwritten (if the keypair was imported already, start without --generate-keypair)", keyOut)
	}
	return nil
}

// generateKeypair makes an ed25519 keypair, writes its private key to
// keyOut and imports the public key as name into the KPS of every
// (region, project) where: of its targets, or of the places its
// discovery reads. The private key goes to that file only: never to
// stdout, a log, Redis or the API. A failed import removes the file, since
// the key would be of no use: running the command again starts afresh.
// It returns the places imported into, for the rotation's history.
func generateKeypair(ctx context.Context, e *env, c *rekey.Client, name, keyOut, scope string, where rekey.KeypairImport) ([]string, error) {
	k, err := rekey.GenerateKeypair(name)
	if err != nil {
		return nil, err
	}
	if err := k.WritePrivateKey(keyOut); err != nil {
		return nil, usageError{err}
	}
	where.Name, where.PublicKey, where.Scope = name, k.PublicKey, scope
	places, err := c.ImportKeypair(ctx, where)
	if err != nil {
		os.Remove(keyOut)
		return nil, fmt.Errorf("%w (imported into %d (region, project) pairs before; the private key file %s was removed)", err, len(places), keyOut)
	}
	fmt.Fprintf(e.stderr, "keypair %s (%s) imported into KPS in %s, scope %s; private key in %s\n",
		name, k.Fingerprint, strings.Join(places, ", "), scope, keyOut)
	return places, nil
}

// tellSkipped says on stderr which projects --all-projects passed over.
func tellSkipped(w io.Writer, plan *rekey.Plan) {
	for _, sp := range plan.Skipped {
		fmt.Fprintf(w, "discover: skipped project %s (%s): %s\n", sp.Name, sp.ID, sp.Reason)
	}
}

func printStarted(w io.Writer, asJSON bool, st *rekey.Started) error {
	if asJSON {
		rot := st.Rotation
		return json.NewEncoder(w).Encode(map[string]any{
			"rotation": rot.ID, "created": st.Created, "enqueued": st.Enqueued,
			"servers": rot.Counts.Total, "chunks": rot.Chunks, "skipped": rot.Counts.Skipped,
			"not_found": len(st.Plan.NotFound), "abnormal": len(st.Plan.Abnormal), "state": rot.State,
			"waves": rot.Waves, "max_errors": rot.MaxErrors,
		})
	}
	_, err := fmt.Fprintln(w, st.Rotation.ID)
	return err
}

// dryRun is what --dry-run prints with --json.
type dryRun struct {
	DryRun          bool   `json:"dry_run"`
	Rotation        string `json:"rotation"`
	Keypair         string `json:"keypair"`
	Targets         int    `json:"targets"`
	ToChange        int    `json:"to_change"`
	AlreadyOnTarget int    `json:"already_on_target"`
	NotFound        int    `json:"not_found"`
	Abnormal        int    `json:"abnormal"`
	Chunks          int    `json:"chunks"`
	Waves           []int  `json:"waves"`
	MaxErrors       int    `json:"max_errors"`
	// MaxErrorsTotal (-1: none) and OnRegionHalt: of a rotation across
	// places as a whole.
	MaxErrorsTotal *int     `json:"max_errors_total,omitempty"`
	OnRegionHalt   string   `json:"on_region_halt,omitempty"`
	ETASeconds     float64  `json:"eta_seconds"`
	Lists          dryLists `json:"lists"`
	// Region and ProjectID name a part's place; Parts are the parts of a
	// rotation across places.
	Region    string    `json:"region,omitempty"`
	ProjectID string    `json:"project_id,omitempty"`
	Parts     []*dryRun `json:"parts,omitempty"`
	// Skipped are the projects --all-projects passed over.
	Skipped []dryRunSkipped `json:"skipped_projects,omitempty"`
}

type dryRunSkipped struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Reason string `json:"reason"`
}

type dryLists struct {
	ToChange        []string `json:"to_change"`
	AlreadyOnTarget []string `json:"already_on_target"`
	NotFound        []string `json:"not_found"`
	Abnormal        []string `json:"abnormal"`
}

// dryRunOf is plan's dry run at the submit rate and job latency given.
func dryRunOf(plan *rekey.Plan, rate rekey.Rate, jobLatency time.Duration) *dryRun {
	d := &dryRun{DryRun: true, Rotation: plan.Rotation, Keypair: plan.Keypair, Targets: plan.Targets, ToChange: len(plan.ToChange),
		AlreadyOnTarget: len(plan.AlreadyOnTarget), NotFound: len(plan.NotFound), Abnormal: len(plan.Abnormal),
		Chunks: plan.Chunks, MaxErrors: plan.MaxErrors, Waves: plan.Waves, Region: plan.Region, ProjectID: plan.ProjectID,
		Lists:      dryLists{ToChange: plan.ToChange, AlreadyOnTarget: plan.AlreadyOnTarget, NotFound: plan.NotFound, Abnormal: plan.Abnormal},
		ETASeconds: plan.ETA(rate, jobLatency).Seconds()}
	for _, part := range plan.Parts {
		d.Parts = append(d.Parts, dryRunOf(part, rate, jobLatency))
	}
	for _, sp := range plan.Skipped {
		d.Skipped = append(d.Skipped, dryRunSkipped{ID: sp.ID, Name: sp.Name, Reason: sp.Reason})
	}
	if plan.Parts != nil {
		total := plan.MaxErrorsTotal
		d.MaxErrorsTotal, d.OnRegionHalt = &total, string(plan.OnRegionHalt)
	}
	return d
}

func printDryRun(w io.Writer, p *planFlags, plan *rekey.Plan) error {
	rate, _ := rekey.ParseRate(p.submitRate) // checked by request
	d := dryRunOf(plan, rate, p.jobLatency)
	t := plan.ETA(rate, p.jobLatency)
	if p.asJSON {
		return json.NewEncoder(w).Encode(d)
	}
	waves := make([]string, len(d.Waves))
	for i, n := range d.Waves {
		waves[i] = strconv.Itoa(n)
	}
	fmt.Fprintf(w, "dry run of rotation %s to keypair %s: nothing written, nothing enqueued\n", plan.Rotation, plan.Keypair)
	fmt.Fprintf(w, "  targets               %6d\n", d.Targets)
	fmt.Fprintf(w, "  to change             %6d\n", d.ToChange)
	fmt.Fprintf(w, "  already on target     %6d  (skipped)\n", d.AlreadyOnTarget)
	fmt.Fprintf(w, "  not found             %6d  (submitted anyway: the API's answer is reported)\n", d.NotFound)
	fmt.Fprintf(w, "  not in a normal state %6d  (submitted anyway: their jobs will likely fail)\n", d.Abnormal)
	fmt.Fprintf(w, "  chunks                %6d  of up to %d servers, in %d wave(s): %s\n", d.Chunks, plan.ChunkSize, len(d.Waves), strings.Join(waves, ", "))
	fmt.Fprintf(w, "  error budget          %6d  failed servers (--max-errors %s)\n", d.MaxErrors, p.maxErrors)
	fmt.Fprintf(w, "  ETA                   ~%s  (%d chunks at %s + %d wave(s) x %s job latency)\n",
		t.Round(time.Second), d.Chunks, rate, len(d.Waves), p.jobLatency)
	if len(plan.Parts) > 0 {
		if plan.MaxErrorsTotal >= 0 {
			fmt.Fprintf(w, "  rotation-wide budget  %6d  failed servers across the parts (--max-errors-total %s)\n", plan.MaxErrorsTotal, p.maxErrorsTotal)
		}
		fmt.Fprintf(w, "  when a part halts     %6s  the others (--on-region-halt)\n", map[rekey.HaltPolicy]string{rekey.HaltAll: "halt", rekey.ContinueOthers: "finish"}[plan.OnRegionHalt])
		fmt.Fprintf(w, "in %d (region, project) places, each with its own quota and error budget:\n", len(plan.Parts))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  PART\tREGION\tPROJECT\tTARGETS\tTO CHANGE\tSKIPPED\tNOT FOUND\tCHUNKS\tMAX ERRORS\tETA")
		for _, pp := range plan.Parts {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t~%s\n", pp.Rotation, orDefault(pp.Region, "(default)"),
				orDefault(pp.ProjectID, "(default)"), pp.Targets, len(pp.ToChange), len(pp.AlreadyOnTarget), len(pp.NotFound),
				pp.Chunks, pp.MaxErrors, pp.ETA(rate, p.jobLatency).Round(time.Second))
		}
		return tw.Flush()
	}
	return nil
}

// readTargets reads and validates the target list; any problem is bad
// input. A target naming no region or project is in --region's and
// HUAWEICLOUD_SDK_PROJECT_ID's, which are left empty in the request: the
// default place, whose rotation keeps the id it had before targets named
// places.
func (p *planFlags) readTargets(e *env, path string, format rekey.Format) ([]rekey.Target, error) {
	c, err := p.cph(e)
	if err != nil {
		return nil, err
	}
	var r io.Reader = e.stdin
	if path != "-" {
		fh, err := os.Open(path)
		if err != nil {
			return nil, usageError{err}
		}
		defer fh.Close()
		r = fh
	}
	ts, err := rekey.ReadTargets(r, rekey.TargetOptions{Format: format, Region: c.Region, ProjectID: c.ProjectID, Regions: c.KnownRegions()})
	if err != nil {
		return nil, usageError{fmt.Errorf("%s: %w", displayName(path), err)}
	}
	for i := range ts {
		if ts[i].Region == c.Region {
			ts[i].Region = ""
		}
		if ts[i].ProjectID == c.ProjectID {
			ts[i].ProjectID = ""
		}
	}
	return ts, nil
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
