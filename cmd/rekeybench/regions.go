package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// benchRegions are the regions of the regions scenario, the first the
// workers' --region; each has its own simulator, project and quota Q.
var benchRegions = []string{"cn-north-4", "cn-east-3", "cn-south-1", "ap-southeast-1"}

// regionsScenario rotates --servers servers in one region at Q, then the
// same number split evenly over four regions at Q each (one rotation of
// four parts), each region's simulator its own quota. Across regions the
// parts run side by side, each under its own region's limiter: the wall
// time should be about a quarter of the one-region run's, near the bound
// of one region's share, with no 429s in any region.
func (b *bench) regionsScenario(ctx context.Context) (*table, error) {
	c := b.c
	t := &table{
		title: fmt.Sprintf("Regions: %d servers in one region, then split over %d regions (one rotation of %d parts), Q = %d req/s for every API in every region, job latency %s, %d worker processes",
			c.servers, len(benchRegions), len(benchRegions), c.quota, c.jobLatency, c.workers),
		header: []string{"run", "wall", "lower bound (a region's share)", "ratio", "429s (by region)", "UpdateKeypair (by region)", "check"},
	}
	b.progress("regions: one region")
	one, err := b.rotate(ctx, rotationRun{workers: c.workers, limiter: limiterFleet, submitRate: b.fleetRate(c.submitBurst), pollRate: b.fleetRate(c.pollBurst)})
	if err != nil {
		return t, err
	}
	lb := b.lowerBoundOf(one, 0)
	t.add(one.check, "1 region", secs(one.wall), secs(lb), fmt.Sprintf("%.2f", one.wall.Seconds()/lb.Seconds()),
		fmt.Sprint(one.throttled()), fmt.Sprint(one.final.Calls[cphsim.APIUpdateKeypair]))

	b.progress("regions: %d regions", len(benchRegions))
	wall, per, calls, throttled, parts, check, err := b.rotateRegions(ctx)
	if err != nil {
		return t, err
	}
	perLB := b.lowerBound(chunksOf(per, c.chunkSize))
	t.add(check, fmt.Sprintf("%d regions, %d servers each", len(benchRegions), per), secs(wall), secs(perLB),
		fmt.Sprintf("%.2f", wall.Seconds()/perLB.Seconds()), throttled, calls)
	t.notes = append(t.notes, fmt.Sprintf("The %d-region run took %.2f of the one-region run's wall time (a quarter is %.2f). Its parts (start after the first part's, own wall): %s.",
		len(benchRegions), wall.Seconds()/one.wall.Seconds(), 1/float64(len(benchRegions)), parts))
	return t, nil
}

// rotateRegions runs one rotation over --servers servers split evenly over
// benchRegions, each region a simulator at Q with a project of its own,
// and returns its wall time (first part created to last part finished),
// the servers a region, its UpdateKeypair calls and 429s by region, and
// each part's check against its simulator.
func (b *bench) rotateRegions(ctx context.Context) (wall time.Duration, per int, calls, throttled, parts string, check error, err error) {
	c := b.c
	b.runs++
	ctx, cancel := context.WithTimeout(ctx, c.runTimeout)
	defer cancel()
	if err := b.flush(ctx); err != nil {
		return 0, 0, "", "", "", nil, fmt.Errorf("flushdb: %w", err)
	}
	per = c.servers / len(benchRegions)
	type region struct {
		name, project string
		sim           *sim
		servers       []cphsim.ServerState
	}
	var regions []*region
	var csv strings.Builder
	csv.WriteString("server_id,region,project_id\n")
	for i, name := range benchRegions {
		project := benchProject
		if i > 0 {
			project = fmt.Sprintf("%032x", i)
		}
		s, err := b.startSimOf(ctx, project, uint64(i+1), per, float64(c.quota), 0, [2]float64{}, latency{})
		if err != nil {
			return 0, 0, "", "", "", nil, err
		}
		defer s.stop(5 * time.Second)
		servers, err := s.servers(ctx, b)
		if err != nil {
			return 0, 0, "", "", "", nil, err
		}
		regions = append(regions, &region{name: name, project: project, sim: s, servers: servers})
		for _, srv := range servers {
			fmt.Fprintf(&csv, "%s,%s,%s\n", srv.ServerID, name, project)
		}
	}
	file := filepath.Join(b.tmp, fmt.Sprintf("run%02d-targets.csv", b.runs))
	if err := os.WriteFile(file, []byte(csv.String()), 0o600); err != nil {
		return 0, 0, "", "", "", nil, err
	}
	env := b.env(regions[0].sim.url)
	env = append(env, "REKEY_REGION="+regions[0].name)
	for _, r := range regions[1:] {
		env = append(env, cph.RegionEnv(r.name)+"="+r.sim.url)
	}
	ws, err := b.startWorkers(ctx, c.workers, env, limiterFleet, b.fleetRate(c.submitBurst), b.fleetRate(c.pollBurst), b.fleetRate(c.readBurst))
	if err != nil {
		return 0, 0, "", "", "", nil, err
	}
	defer stopAll(ws)
	id, err := b.enqueueStart(ctx, env, file)
	if err != nil {
		return 0, 0, "", "", "", nil, err
	}
	store := tasks.NewStore(b.rdb, "")
	g, err := store.Group(ctx, id)
	if err != nil {
		return 0, 0, "", "", "", nil, err
	}
	procs := append([]*proc(nil), ws...)
	for _, r := range regions {
		procs = append(procs, r.sim.proc)
	}
	var first, last time.Time
	var callsBy, throttledBy, partsBy []string
	var rots []*tasks.Rotation
	var checks []error
	for i, part := range g.Parts {
		rot, err := b.waitFinished(ctx, store, part, procs)
		if err != nil {
			return 0, 0, "", "", "", nil, err
		}
		if first.IsZero() || rot.CreatedAt.Before(first) {
			first = rot.CreatedAt
		}
		if rot.FinishedAt.After(last) {
			last = rot.FinishedAt
		}
		rots = append(rots, rot)
		r := regions[i]
		if rot.Region != r.name && (i > 0 || rot.Region != "") {
			return 0, 0, "", "", "", nil, fmt.Errorf("part %s is in %q, want %s", part, rot.Region, r.name)
		}
		after, err := r.sim.servers(ctx, b)
		if err != nil {
			return 0, 0, "", "", "", nil, err
		}
		if err := verifyRotation(ctx, store, rot, after, nil, len(r.servers)); err != nil {
			checks = append(checks, fmt.Errorf("%s: %w", r.name, err))
		}
		st, err := r.sim.stats(ctx, b)
		if err != nil {
			return 0, 0, "", "", "", nil, err
		}
		n429 := 0
		for _, n := range st.Throttled {
			n429 += n
		}
		callsBy = append(callsBy, fmt.Sprintf("%s %d", r.name, st.Calls[cphsim.APIUpdateKeypair]))
		throttledBy = append(throttledBy, fmt.Sprintf("%s %d", r.name, n429))
		if n429 > 0 {
			checks = append(checks, fmt.Errorf("%s: %d self-inflicted 429s", r.name, n429))
		}
	}
	for i, rot := range rots {
		partsBy = append(partsBy, fmt.Sprintf("%s +%s %s", regions[i].name, secs(rot.CreatedAt.Sub(first)), secs(rot.FinishedAt.Sub(rot.CreatedAt))))
	}
	return last.Sub(first), per, strings.Join(callsBy, ", "), strings.Join(throttledBy, ", "), strings.Join(partsBy, ", "), errors.Join(checks...), nil
}
