package main

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/envflag"
)

// The scenarios of issue 10, on how the fleet limiter adapts:
//
//	raise     the UpdateKeypair quota halves, then comes back: is the restored quota used again?
//	isolated  the limiter at rate Q with burst Q (one self-inflicted 429): does it cost more than a pause?

// adaptiveConfig is the flags of the raise and isolated scenarios.
type adaptiveConfig struct {
	raiseServers int
	raiseHalveAt float64
	raiseAfter   time.Duration
	hideQuota    bool // the simulator's 429s name no quota
}

func (a *adaptiveConfig) flags(fs *envflag.FlagSet) {
	fs.IntVar(&a.raiseServers, "raise-servers", 60000, "fleet size of the raise scenario (long enough to measure the restored quota 10 s after it comes back)")
	fs.Float64Var(&a.raiseHalveAt, "raise-halve-at", 0.1, "raise scenario: halve the quota when this `fraction` of the chunks is submitted")
	fs.DurationVar(&a.raiseAfter, "raise-after", 10*time.Second, "raise scenario: restore the quota this long after halving it")
	fs.BoolVar(&a.hideQuota, "sim-hide-quota", false, "the simulator's 429s name no quota (cphsim --hide-quota): the limiter must find it from the 429s alone")
}

// header is what the settings add to the output's first line.
func (a *adaptiveConfig) header() string {
	if a.hideQuota {
		return "The simulator's 429s name no quota (--sim-hide-quota)."
	}
	return ""
}

// simArgs are the simulator flags these settings add.
func (a *adaptiveConfig) simArgs() []string {
	if a.hideQuota {
		return []string{"--hide-quota"}
	}
	return nil
}

func (a *adaptiveConfig) validate() error {
	switch {
	case a.raiseServers < 1 || a.raiseServers > 1_000_000:
		return fmt.Errorf("--raise-servers %d: want 1-1000000", a.raiseServers)
	case !(a.raiseHalveAt > 0 && a.raiseHalveAt < 1):
		return fmt.Errorf("--raise-halve-at %v: want a fraction in (0, 1)", a.raiseHalveAt)
	case a.raiseAfter <= 0:
		return fmt.Errorf("--raise-after %s: want a positive duration", a.raiseAfter)
	}
	return nil
}

// adaptiveScenario runs the scenario named s, one of this file's.
func (b *bench) adaptiveScenario(ctx context.Context, s string) (*table, error) {
	switch s {
	case "raise":
		return b.raiseScenario(ctx)
	case "isolated":
		return b.isolatedScenario(ctx)
	}
	return nil, fmt.Errorf("unknown scenario %q", s)
}

// servedAt returns api's served calls at the last sample at or before t.
func (r *result) servedAt(api cphsim.API, t time.Time) int {
	n := 0
	for _, s := range r.samples {
		if s.at.After(t) {
			break
		}
		n = accepted(s.st, api)
	}
	return n
}

// useBetween is api's served calls per second from one time to another, as
// a share of q; ok is false when the span is shorter than a second.
func (r *result) useBetween(api cphsim.API, from, to time.Time, q float64) (use float64, ok bool) {
	span := to.Sub(from)
	if span < time.Second {
		return 0, false
	}
	return float64(r.servedAt(api, to)-r.servedAt(api, from)) / span.Seconds() / q, true
}

// lastSubmit is when the run's last UpdateKeypair was served.
func (r *result) lastSubmit() time.Time {
	end, _ := r.crossing(cphsim.APIUpdateKeypair, accepted(r.final, cphsim.APIUpdateKeypair))
	return end
}

// throttledBetween counts UpdateKeypair 429s between two times.
func (r *result) throttledBetween(from, to time.Time) int {
	at := func(t time.Time) int {
		n := 0
		for _, s := range r.samples {
			if s.at.After(t) {
				break
			}
			n = s.st.Throttled[cphsim.APIUpdateKeypair]
		}
		return n
	}
	return at(to) - at(from)
}

func pctOr(use float64, ok bool) string {
	if !ok {
		return "n/a (under 1 s)"
	}
	return pct(use)
}

// halveUseNote is the halve scenario's quota use from 5 s after the halving
// to the last submit, issue 10's measure of it.
func halveUseNote(r *result, halvedAt time.Time, newQ float64) string {
	use, ok := r.useBetween(cphsim.APIUpdateKeypair, halvedAt.Add(5*time.Second), r.lastSubmit(), newQ)
	return fmt.Sprintf("New-quota use from 5 s after the halving to the last submit: %s. UpdateKeypair 429s in the 5 s after the halving: %d; after those 5 s: %d.",
		pctOr(use, ok), r.throttledBetween(halvedAt, halvedAt.Add(5*time.Second)), r.throttledBetween(halvedAt.Add(5*time.Second), r.lastSubmit().Add(time.Second)))
}

// raiseScenario halves the simulator's UpdateKeypair quota once a share of
// the chunks is submitted, restores it --raise-after later, and measures how
// much of each quota the fleet uses.
func (b *bench) raiseScenario(ctx context.Context) (*table, error) {
	c, a := b.c, b.c.adaptive
	const api = cphsim.APIUpdateKeypair
	q := float64(c.quota)
	newQ := q / 2
	chunks := chunksOf(a.raiseServers, c.chunkSize)
	trigger := int(math.Ceil(a.raiseHalveAt * float64(chunks)))
	t := &table{
		title: fmt.Sprintf("Quota halves, then comes back: %d servers, %d worker processes, fleet limiter at Q = %d; UpdateKeypair quota → %g after %d of %d chunks, back to %g %s later",
			a.raiseServers, c.workers, c.quota, newQ, trigger, chunks, q, a.raiseAfter),
		header: []string{"halved at", "restored at", "429s while halved: first 5 s / after", "429s after restore", "half-quota use from 5 s after halving to restore",
			"restored-quota use from restore / from 10 s after restore to last submit", "wall", "check"},
	}
	var halvedAt, restoredAt time.Time
	var simErr error
	onSample := func(s *sim, smp sample) {
		switch {
		case simErr != nil:
		case halvedAt.IsZero() && accepted(smp.st, api) >= trigger:
			simErr = s.setQuota(ctx, b, api, newQ)
			halvedAt = time.Now()
		case !halvedAt.IsZero() && restoredAt.IsZero() && time.Since(halvedAt) >= a.raiseAfter:
			simErr = s.setQuota(ctx, b, api, q)
			restoredAt = time.Now()
		}
	}
	b.progress("raise: %d workers, %d servers, quota %g → %g → %g", c.workers, a.raiseServers, q, newQ, q)
	res, err := b.rotate(ctx, rotationRun{servers: a.raiseServers, workers: c.workers, limiter: limiterFleet,
		submitRate: b.fleetRate(c.submitBurst), pollRate: b.fleetRate(c.pollBurst), onSample: onSample})
	if err != nil {
		return t, err
	}
	if simErr != nil {
		return t, fmt.Errorf("change the quota: %w", simErr)
	}
	if restoredAt.IsZero() {
		return t, fmt.Errorf("the run ended before the quota was restored (halved: %v); raise --raise-servers", !halvedAt.IsZero())
	}
	end := res.lastSubmit()
	start := res.samples[0].at
	halfUse, hok := res.useBetween(api, halvedAt.Add(5*time.Second), restoredAt, newQ)
	fromRestore, rok := res.useBetween(api, restoredAt, end, q)
	restoredUse, ok := res.useBetween(api, restoredAt.Add(10*time.Second), end, q)
	t.add(res.check, secs(halvedAt.Sub(start)), secs(restoredAt.Sub(start)),
		fmt.Sprintf("%d / %d", res.throttledBetween(halvedAt, halvedAt.Add(5*time.Second)), res.throttledBetween(halvedAt.Add(5*time.Second), restoredAt)),
		fmt.Sprint(res.throttledBetween(restoredAt, end.Add(time.Second))),
		pctOr(halfUse, hok), pctOr(fromRestore, rok)+" / "+pctOr(restoredUse, ok), secs(res.wall))
	t.notes = append(t.notes,
		fmt.Sprintf("Times from the first sample. Only UpdateKeypair 429s are counted. Quota use = UpdateKeypair calls served per second in the span ÷ the quota then (%g, then %g); the restored quota is measured up to the last submit (%s after the restore).", newQ, q, secs(end.Sub(restoredAt))))
	return t, nil
}

// isolatedScenario runs cph-rekey with the limiter's burst at Q, where the
// first instant's burst meets the API's own and a 429 or two follow, beside
// the same run with burst 1 and the Quota scenario's baselines.
func (b *bench) isolatedScenario(ctx context.Context) (*table, error) {
	c := b.c
	q := float64(c.quota)
	t := &table{
		title:  fmt.Sprintf("Isolated 429: %d servers, Q = %d req/s per API, fleet limiter at rate Q with burst Q and with burst 1, %d worker processes", c.servers, c.quota, c.workers),
		header: quotaHeader,
	}
	submit := perSecond(q)
	intruders := max(1, c.quota/2)
	runs := []struct {
		name                  string
		limiter, submit, poll string
		intrude               bool
	}{
		{fmt.Sprintf("cph-rekey: %d workers, fleet limiter at Q, burst Q (%s:%d)", c.workers, submit, c.quota), limiterFleet, fmt.Sprintf("%s:%d", submit, c.quota), b.fleetRate(c.pollBurst), false},
		{fmt.Sprintf("cph-rekey: %d workers, fleet limiter at Q, burst 1 (%s:1)", c.workers, submit), limiterFleet, submit + ":1", b.fleetRate(c.pollBurst), false},
		{fmt.Sprintf("cph-rekey: as burst Q, and another client spends %d UpdateKeypair calls at once at 30 %%", intruders), limiterFleet, fmt.Sprintf("%s:%d", submit, c.quota), b.fleetRate(c.pollBurst), true},
		{fmt.Sprintf("baseline: %d workers, local x/time/rate at Q each", c.workers), limiterLocal, perSecond(q), perSecond(q), false},
		{fmt.Sprintf("baseline: %d workers, local x/time/rate at Q/%d each", c.workers, c.workers), limiterLocal,
			perSecond(q / float64(c.workers)), perSecond(q / float64(c.workers)), false},
	}
	var ratios []float64
	var walls []time.Duration
	for _, r := range runs {
		b.progress("isolated: %s", r.name)
		var onSample func(*sim, sample)
		var intrudeErr error
		if r.intrude {
			trigger, done := int(math.Ceil(0.3*float64(chunksOf(c.servers, c.chunkSize)))), false
			onSample = func(s *sim, smp sample) {
				if !done && accepted(smp.st, cphsim.APIUpdateKeypair) >= trigger {
					done = true
					intrudeErr = intrude(ctx, s, intruders)
				}
			}
		}
		res, err := b.rotate(ctx, rotationRun{workers: c.workers, limiter: r.limiter, submitRate: r.submit, pollRate: r.poll, onSample: onSample})
		if err == nil {
			err = intrudeErr
		}
		if err != nil {
			return t, fmt.Errorf("%s: %w", r.name, err)
		}
		b.quotaRow(t, r.name, res, 0)
		ratios = append(ratios, res.wall.Seconds()/b.lowerBound(res.chunks).Seconds())
		walls = append(walls, res.wall)
	}
	if err := b.sequentialRow(ctx, t); err != nil {
		return t, err
	}
	fastest := min(walls[3], walls[4])
	t.notes = append(t.notes,
		fmt.Sprintf("Burst Q vs burst 1: ratio %.2f vs %.2f (%+.0f %%). Burst Q's wall %s vs the fastest local baseline's %s (the sequential one is slower still).",
			ratios[0], ratios[1], 100*(ratios[0]/ratios[1]-1), secs(walls[0]), secs(fastest)),
		fmt.Sprintf("With another client: ratio %.2f (%+.0f %% vs burst 1). Its %d calls take as many of the API's tokens at one instant, so the fleet's next calls get 429s naming Q at rate Q: isolated 429s; they are in that row's calls (and 429s, if any of theirs got one).", ratios[2], 100*(ratios[2]/ratios[1]-1), intruders),
		"Columns as in the Quota table. The configured rate equals the simulator's quota, so every other 429 is self-inflicted.")
	return t, nil
}

// intrude makes n UpdateKeypair calls at once from outside the fleet, for
// a server the simulator does not have, as another client of the same
// quota would.
func intrude(ctx context.Context, s *sim, n int) error {
	client, err := cph.NewClient(cph.Config{Endpoint: s.url, ProjectID: benchProject,
		Credentials: cph.Credentials{AccessKey: benchAK, SecretKey: benchSK}})
	if err != nil {
		return err
	}
	errs := make(chan error, n)
	for range n {
		go func() {
			_, err := client.UpdateKeypair(ctx, []cph.ServerKeypair{{ServerID: "intruder", KeypairName: benchKeypair}})
			if cph.IsThrottled(err) {
				err = nil
			}
			errs <- err
		}()
	}
	var first error
	for range n {
		if err := <-errs; err != nil && first == nil {
			first = fmt.Errorf("another client's UpdateKeypair: %w", err)
		}
	}
	return first
}
