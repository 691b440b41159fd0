package rekey

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/iam"
	"github.com/cph-rekey/cph-rekey/internal/targets"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// Discover takes a rotation's targets from the server lists
// (ListCloudPhoneServers, 100 servers a call) of one or more places
// instead of a list.
type Discover struct {
	// NameContains keeps only servers whose name contains it ("": all).
	NameContains string
	// Status keeps only servers in this status (5 is normal); nil: all.
	Status *int
	// Regions, Projects and AllProjects choose the places (region,
	// project) whose lists are read; none of them: the client's own
	// (Options.CPH's Region and ProjectID). The projects, and the region
	// each is in, come from IAM (GET /v3/auth/projects, on
	// CPH.IAMEndpoint): a project named {region} or {region}_{suffix} is
	// in that region.
	//
	// Projects are project ids (32 hex digits); AllProjects is every
	// project the credentials reach in a known region (the others, such
	// as a global project, are skipped and listed in Plan.Skipped). Set
	// one of the two at most. Regions alone are each region's own
	// project, the one named after it; with Projects or AllProjects they
	// keep only those regions' projects. A region must be known
	// (CPH.KnownRegions).
	Regions     []string
	Projects    []string
	AllProjects bool
}

// acrossProjects reports whether d reads other places than the client's
// own.
func (d Discover) acrossProjects() bool {
	return len(d.Regions) > 0 || len(d.Projects) > 0 || d.AllProjects
}

// SkippedProject is a project IAM listed that a discovery of all projects
// passed over.
type SkippedProject struct {
	ID, Name string
	Reason   string
}

// check refuses bad input in d before anything is read.
func (d Discover) check(known []string) error {
	if len(d.Projects) > 0 && d.AllProjects {
		return badInput("discover: both projects (%s) and all projects: name the projects, or take every one, not both",
			strings.Join(d.Projects, ","))
	}
	seen := map[string]bool{}
	for _, r := range d.Regions {
		if err := targets.ValidateRegion(r, known); err != nil {
			return &InputError{Err: fmt.Errorf("discover: %w", err)}
		}
		if seen[r] {
			return badInput("discover: region %s given twice", r)
		}
		seen[r] = true
	}
	for _, id := range d.Projects {
		if err := targets.ValidateProjectID(id); err != nil {
			return &InputError{Err: fmt.Errorf("discover: %w", err)}
		}
		if seen[id] {
			return badInput("discover: project %s given twice", id)
		}
		seen[id] = true
	}
	return nil
}

// discoverPlaces resolves the places d reads, asking IAM which projects
// the credentials reach when d goes beyond the client's own place. Bad
// input, and a project or region IAM does not show, is an *InputError;
// nothing has been read from a fleet then.
func (c *Client) discoverPlaces(ctx context.Context, d Discover) ([]tasks.Place, []SkippedProject, error) {
	if c.api == nil {
		return nil, nil, badInput("discovery reads the fleet: give the client Options.CPH")
	}
	known := c.cph.KnownRegions()
	if err := d.check(known); err != nil {
		return nil, nil, err
	}
	if !d.acrossProjects() {
		return []tasks.Place{{}}, nil, nil
	}
	ic, err := iam.NewClient(iam.Config{Endpoint: c.cph.iamEndpoint(), Credentials: c.cph.credentials(),
		HTTPClient: c.cph.HTTPClient, ReadRetries: c.base.ReadRetries})
	if err != nil {
		return nil, nil, &InputError{Err: err}
	}
	projects, err := ic.AuthProjects(ctx)
	if err != nil {
		return nil, nil, wrap(fmt.Errorf("discover: list the projects the credentials reach (IAM %s): %w", c.cph.iamEndpoint(), err))
	}
	isKnown := func(r string) bool { return slices.Contains(known, r) }
	inRegions := func(r string) bool { return len(d.Regions) == 0 || slices.Contains(d.Regions, r) }
	byID := map[string]iam.Project{}
	for _, p := range projects {
		byID[p.ID] = p
	}
	var places []tasks.Place
	var skipped []SkippedProject
	add := func(region, project string) {
		p := c.placeOf(Target{Region: region, ProjectID: project})
		if !slices.Contains(places, p) {
			places = append(places, p)
		}
	}
	switch {
	case d.AllProjects:
		for _, p := range projects {
			region, ok := iam.RegionOf(p.Name, isKnown)
			switch {
			case !ok:
				skipped = append(skipped, SkippedProject{ID: p.ID, Name: p.Name,
					Reason: "its name is not a known region or {region}_{suffix}: a project in no region"})
			case !inRegions(region):
			case !p.Enabled:
				skipped = append(skipped, SkippedProject{ID: p.ID, Name: p.Name, Reason: "disabled"})
			default:
				add(region, p.ID)
			}
		}
	case len(d.Projects) > 0:
		for _, id := range d.Projects {
			p, listed := byID[strings.ToLower(id)]
			if !listed {
				return nil, nil, badInput("discover: project %s is not among the %d projects the credentials reach (IAM's GET /v3/auth/projects)", id, len(projects))
			}
			region, ok := iam.RegionOf(p.Name, isKnown)
			switch {
			case !ok:
				return nil, nil, badInput("discover: project %s (%s) has no region: its name is not a known region or {region}_{suffix}", id, p.Name)
			case !inRegions(region):
				return nil, nil, badInput("discover: project %s (%s) is in %s, not in the regions given (%s)", id, p.Name, region, strings.Join(d.Regions, ","))
			case !p.Enabled:
				return nil, nil, badInput("discover: project %s (%s) is disabled", id, p.Name)
			}
			add(region, p.ID)
		}
	default:
		for _, r := range d.Regions {
			i := slices.IndexFunc(projects, func(p iam.Project) bool { return p.Name == r && p.Enabled })
			if i < 0 {
				return nil, nil, badInput("discover: region %s: the credentials reach no project named %s (its own)", r, r)
			}
			add(r, projects[i].ID)
		}
	}
	for _, r := range d.Regions {
		if slices.ContainsFunc(places, func(p tasks.Place) bool { return cmp.Or(p.Region, c.cph.Region) == r }) {
			continue
		}
		if len(d.Projects) > 0 {
			return nil, nil, badInput("discover: region %s: none of the projects given is there", r)
		}
		return nil, nil, badInput("discover: region %s: the credentials reach no project there", r)
	}
	if len(places) == 0 {
		return nil, skipped, badInput("discover: the credentials reach no project in a known region (IAM lists %d, none named {region} or {region}_{suffix})", len(projects))
	}
	return places, skipped, nil
}

// discover lists the servers matching d in each of places, one place
// after the other (each with the parallel reader of cph.Client.ListServers),
// telling progress (when set) how it goes, summed over the places.
func (c *Client) discover(ctx context.Context, d Discover, places []tasks.Place, progress func(PlanProgress)) ([]tasks.Target, error) {
	var ts []tasks.Target
	var done PlanProgress // of the places read
	start := time.Now()
	for _, place := range places {
		api, err := c.apiAt(place)
		if err != nil {
			return nil, err
		}
		f := cph.ServerFilter{ServerName: d.NameContains, Status: d.Status}
		var last PlanProgress
		if progress != nil {
			f.Progress = func(p cph.ListProgress) {
				last = listProgress(StepDiscover, p, start)
				pp := last
				pp.Pages, pp.TotalPages, pp.Listed = pp.Pages+done.Pages, pp.TotalPages+done.TotalPages, pp.Listed+done.Listed
				pp.Throttled, pp.Retries = pp.Throttled+done.Throttled, pp.Retries+done.Retries
				pp.Matched = pp.Listed
				progress(pp)
			}
		}
		err = api.ListServers(ctx, f, func(page []cph.Server) error {
			for _, s := range page {
				ts = append(ts, tasks.Target{ServerID: s.ServerID, Place: place}) // each server comes once
			}
			return nil
		})
		if err != nil {
			return nil, wrap(fmt.Errorf("discover servers in %s: %w", c.placeName(place), err))
		}
		done.Pages, done.TotalPages, done.Listed = done.Pages+last.Pages, done.TotalPages+last.TotalPages, done.Listed+last.Listed
		done.Throttled, done.Retries = done.Throttled+last.Throttled, done.Retries+last.Retries
	}
	switch {
	case len(ts) == 0 && len(places) == 1:
		return nil, badInput("discovery found no servers")
	case len(ts) == 0:
		return nil, badInput("discovery found no servers in %d (region, project) places", len(places))
	}
	return ts, nil
}

// placeName is p with the client's own region and project filled in.
func (c *Client) placeName(p tasks.Place) string {
	return cmp.Or(p.Region, c.cph.Region) + "/" + cmp.Or(p.ProjectID, c.cph.ProjectID)
}
