package rekey

import (
	"context"
	"errors"
	"math"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// Plan is a rotation resolved against the fleet, before anything is
// written: what Start would do. It is the dry run.
type Plan struct {
	// Rotation is the id Start would give the rotation (the same Request
	// starts exactly this rotation).
	Rotation string
	Keypair  string
	// Targets counts the servers asked for: ToChange, NotFound and
	// Abnormal are submitted, AlreadyOnTarget is skipped.
	Targets         int
	ToChange        []string
	AlreadyOnTarget []string
	// NotFound are not in the project's server list; they are submitted
	// anyway, so the API's own answer is reported.
	NotFound []string
	// Abnormal are listed but not in the normal status; their jobs will
	// likely fail.
	Abnormal []string
	// Chunks is the number of UpdateKeypair calls of the first attempts,
	// of up to ChunkSize servers.
	Chunks, ChunkSize int
	// Waves are the servers of each canary wave, in order.
	Waves []int
	// MaxErrors is the error budget in servers.
	MaxErrors int
	// Read reports whether the fleet was read (skip-matching).
	Read bool
	// Region and ProjectID are the place of a rotation of one place
	// ("": the workers' own).
	Region, ProjectID string
	// Parts are the plans of a rotation across places, one a (region,
	// project), in the order the places first appear in the targets; the
	// figures above are their sums (Waves wave by wave, MaxErrors the
	// budgets of all parts: each part has its own; MaxErrorsTotal is the
	// whole's). Nil for one place.
	Parts []*Plan
	// MaxConcurrentRegions is how many parts run at once (0: all).
	MaxConcurrentRegions int
	// Skipped are the projects a discovery of all projects passed over
	// (Discover.AllProjects), each with the reason.
	Skipped []SkippedProject
	// MaxErrorsTotal is the budget of a rotation across places as a whole,
	// in servers (-1: none; MaxErrors is then the parts' budgets summed),
	// and OnRegionHalt what the others do when a part halts.
	MaxErrorsTotal int
	OnRegionHalt   HaltPolicy

	plan *tasks.Plan
}

// ETA estimates how long the rotation takes: its chunks at the workers'
// fleet-wide submit rate, plus one job latency per wave (each wave waits
// for the previous one's jobs). The parts of a rotation across places run
// side by side, each under its region's quota: its ETA is its longest
// part's.
func (p *Plan) ETA(submitRate Rate, jobLatency time.Duration) time.Duration {
	if submitRate.Events <= 0 || submitRate.Per <= 0 {
		return 0
	}
	if p.Parts != nil {
		var longest time.Duration
		for _, part := range p.Parts {
			longest = max(longest, part.ETA(submitRate, jobLatency))
		}
		return longest
	}
	perSecond := float64(submitRate.Events) / submitRate.Per.Seconds()
	submit := time.Duration(math.Ceil(float64(p.Chunks)/perSecond*1000)) * time.Millisecond
	return submit + time.Duration(len(p.Waves))*jobLatency
}

// Plan validates r and reads the fleet as Start would (one
// ListCloudPhoneServers call per 100 servers of the project, never one per
// target, several in flight at Options.ReadRate), and returns what would
// change; r.Progress, when set, is told how the reads go. Before any read
// of the fleet it asks the KPS of each (region, project) whether the
// keypairs exist (unless r.SkipKeypairCheck): a missing one is an
// *InputError holding a *MissingKeypairError. It writes nothing and does
// not use Redis. Bad input is an *InputError; a failed read an *APIError.
func (c *Client) Plan(ctx context.Context, r Request) (*Plan, error) {
	// The last figures seen, of either step, go with the call that says
	// the plan is done.
	var last PlanProgress
	tell := r.Progress
	if tell != nil {
		r.Progress = func(p PlanProgress) {
			last = p
			tell(p)
		}
	}
	check := !r.SkipKeypairCheck && c.cph != nil
	var places []tasks.Place
	var skipped []SkippedProject
	if r.Discover != nil {
		var err error
		if places, skipped, err = c.discoverPlaces(ctx, *r.Discover); err != nil {
			return nil, err
		}
		// A token, and a missing keypair, are refused before the fleet's
		// lists are read.
		specs := make([]tasks.Spec, len(places))
		for i, p := range places {
			specs[i] = tasks.Spec{Keypair: r.Keypair, Place: p}
		}
		if err := c.oneProjectForTokens(specs); err != nil {
			return nil, err
		}
		if check {
			if err := c.checkKeypairs(ctx, specs); err != nil {
				return nil, err
			}
		}
	}
	spec, err := c.spec(ctx, r, places)
	if err != nil {
		return nil, err
	}
	group, specs, err := tasks.SplitPlaces(spec)
	if err != nil {
		return nil, &InputError{Err: err}
	}
	if err := c.oneProjectForTokens(specs); err != nil {
		return nil, err
	}
	if check && r.Discover == nil { // discovery's places were checked before its reads
		if err := c.checkKeypairs(ctx, specs); err != nil {
			return nil, err
		}
	}
	var plans []*Plan
	for _, spec := range specs {
		var lister tasks.ServerLister
		if spec.SkipMatching {
			api, err := c.apiAt(spec.Place)
			if err != nil {
				return nil, err
			}
			lister = api
		}
		if r.Progress != nil && spec.SkipMatching {
			start := time.Now()
			spec.Progress = func(p tasks.PlanProgress) {
				pp := listProgress(StepRead, p.ListProgress, start)
				pp.Targets, pp.Matched = p.Targets, p.Matched
				r.Progress(pp)
			}
		}
		tp, err := tasks.MakePlan(ctx, spec, lister)
		if err != nil {
			var ce *cph.Error
			if errors.As(err, &ce) || ctx.Err() != nil {
				return nil, wrap(err)
			}
			return nil, &InputError{Err: err}
		}
		plans = append(plans, planOf(tp))
	}
	if tell != nil {
		last.Done = true
		tell(last)
	}
	if group == "" {
		plans[0].Skipped = skipped
		return plans[0], nil
	}
	p := groupPlan(group, plans)
	p.MaxConcurrentRegions = r.MaxConcurrentRegions
	p.Skipped = skipped
	p.OnRegionHalt, _ = ParseHaltPolicy(string(r.OnRegionHalt))
	p.MaxErrorsTotal = -1
	if r.MaxErrorsTotal != nil {
		submitted := 0
		for _, part := range plans {
			submitted += part.plan.Servers()
		}
		p.MaxErrorsTotal = r.MaxErrorsTotal.internal().Floor(submitted)
	}
	return p, nil
}

// groupPlan sums the plans of a group's parts, which it keeps as Parts.
func groupPlan(group string, parts []*Plan) *Plan {
	p := &Plan{Rotation: group, Keypair: parts[0].Keypair, ChunkSize: parts[0].ChunkSize, Read: parts[0].Read,
		ToChange: []string{}, Waves: []int{}, Parts: parts}
	for _, part := range parts {
		p.Targets += part.Targets
		p.ToChange = append(p.ToChange, part.ToChange...)
		p.AlreadyOnTarget = append(p.AlreadyOnTarget, part.AlreadyOnTarget...)
		p.NotFound = append(p.NotFound, part.NotFound...)
		p.Abnormal = append(p.Abnormal, part.Abnormal...)
		p.Chunks += part.Chunks
		p.MaxErrors += part.MaxErrors
		for i, w := range part.Waves {
			if i == len(p.Waves) {
				p.Waves = append(p.Waves, 0)
			}
			p.Waves[i] += w
		}
	}
	return p
}

func planOf(tp *tasks.Plan) *Plan {
	rot := tp.Rotation
	ids := func(es []tasks.Entry) []string {
		out := make([]string, 0, len(es))
		for _, e := range es {
			out = append(out, e.ServerID)
		}
		return out
	}
	p := &Plan{Rotation: rot.ID, Keypair: rot.Keypair, Region: rot.Region, ProjectID: rot.ProjectID, Chunks: rot.Chunks, ChunkSize: rot.ChunkSize, MaxErrors: rot.MaxErrors,
		Read: tp.Read, AlreadyOnTarget: ids(tp.Skipped), NotFound: ids(tp.NotFound), Abnormal: ids(tp.Abnormal),
		ToChange: []string{}, Waves: []int{}, plan: tp}
	odd := map[string]bool{}
	for _, e := range append(tp.NotFound, tp.Abnormal...) {
		odd[e.ServerID] = true
	}
	for _, ch := range tp.Chunks {
		for _, e := range ch {
			if !odd[e.ServerID] {
				p.ToChange = append(p.ToChange, e.ServerID)
			}
		}
	}
	p.Targets = tp.Servers() + len(tp.Skipped)
	for _, w := range rot.Waves {
		p.Waves = append(p.Waves, w.Servers)
	}
	return p
}
