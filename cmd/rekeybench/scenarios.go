package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

// table is one scenario's Markdown table and the notes under it.
type table struct {
	title  string
	header []string
	rows   [][]string
	notes  []string
	failed bool // a run's correctness check failed
}

func (t *table) add(check error, cells ...string) {
	status := "ok"
	if check != nil {
		status = "FAILED: " + check.Error()
		t.failed = true
	}
	t.rows = append(t.rows, append(cells, status))
}

func (t *table) write(w io.Writer) {
	fmt.Fprintf(w, "### %s\n\n| %s |\n|%s\n", t.title, strings.Join(t.header, " | "), strings.Repeat("---|", len(t.header)))
	for _, r := range t.rows {
		fmt.Fprintf(w, "| %s |\n", strings.Join(r, " | "))
	}
	fmt.Fprintln(w)
	for _, n := range t.notes {
		fmt.Fprintln(w, n)
	}
	if len(t.notes) > 0 {
		fmt.Fprintln(w)
	}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.1f s", d.Seconds()) }
func pct(f float64) string        { return fmt.Sprintf("%.0f %%", 100*f) }

// perSecond formats a rate for the worker flags: whole per-second rates as
// such, others per minute.
func perSecond(q float64) string {
	if q == math.Trunc(q) {
		return fmt.Sprintf("%d/s", int(q))
	}
	return fmt.Sprintf("%d/m", int(math.Round(q*60)))
}

// fleetRate is a worker --submit-rate or --poll-rate of the fleet limiter
// runs: Q, with a burst when set.
func (b *bench) fleetRate(burst int) string {
	r := perSecond(float64(b.c.quota))
	if burst > 0 {
		r += fmt.Sprintf(":%d", burst)
	}
	return r
}

func (b *bench) progress(format string, args ...any) {
	fmt.Fprintf(b.stderr, "%s  %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

var quotaHeader = []string{"run", "wall", "lower bound", "ratio", "429s", "submit rate ÷ Q", "poll rate ÷ Q", "API calls / server", "check"}

// quotaRow fills a row of quotaHeader from a cph-rekey run.
func (b *bench) quotaRow(t *table, name string, r *result) {
	lb := b.lowerBound(r.chunks)
	q := float64(b.c.quota)
	t.add(r.check, name, secs(r.wall), secs(lb), fmt.Sprintf("%.2f", r.wall.Seconds()/lb.Seconds()),
		fmt.Sprint(r.throttled()), pct(r.rateShare(cphsim.APIUpdateKeypair, q)),
		pct(r.rateShare(cphsim.APIListJobs, q)), fmt.Sprintf("%.4f", r.callsPerServer()))
}

// quotaScenario is the Quota benchmark: cph-rekey against a sequential
// client and against asynq's per-process limiter at Q and at Q/4.
func (b *bench) quotaScenario(ctx context.Context) (*table, error) {
	c := b.c
	q := float64(c.quota)
	t := &table{
		title:  fmt.Sprintf("Quota: %d servers, chunk %d, Q = %d req/s per API, job latency %s, %d worker processes", c.servers, c.chunkSize, c.quota, c.jobLatency, c.workers),
		header: quotaHeader,
	}
	runs := []struct {
		name                  string
		limiter, submit, poll string
	}{
		{fmt.Sprintf("cph-rekey: %d workers, fleet limiter at Q", c.workers), limiterFleet, b.fleetRate(c.submitBurst), b.fleetRate(c.pollBurst)},
		{fmt.Sprintf("baseline: %d workers, local x/time/rate at Q each", c.workers), limiterLocal, perSecond(q), perSecond(q)},
		{fmt.Sprintf("baseline: %d workers, local x/time/rate at Q/%d each", c.workers, c.workers), limiterLocal,
			perSecond(q / float64(c.workers)), perSecond(q / float64(c.workers))},
	}
	for i, r := range runs {
		b.progress("quota: %s", r.name)
		res, err := b.rotate(ctx, rotationRun{workers: c.workers, limiter: r.limiter, submitRate: r.submit, pollRate: r.poll})
		if err != nil {
			return t, fmt.Errorf("%s: %w", r.name, err)
		}
		b.quotaRow(t, r.name, res)
		if i == 0 {
			if err := b.sequentialRow(ctx, t); err != nil {
				return t, err
			}
		}
	}
	t.notes = append(t.notes,
		fmt.Sprintf("Lower bound = %d UpdateKeypair calls ÷ Q + job latency (%s). Wall = the rotation's created → finished time in Redis (enqueue's planning excluded).", chunksOf(c.servers, c.chunkSize), c.jobLatency+c.jobJitter),
		"Submit (poll) rate ÷ Q = UpdateKeypair (ListJobs) calls served per second from the API's first served call to its last, ÷ Q: the quota use while the API was busy (the simulator's bucket of Q lets a run that starts with a burst exceed 100 %).",
		"The poll rate is not a target: poll demand follows the poll cadence. 429s = UpdateKeypair + ListJobs answers 429. API calls / server counts every request, 429s included.",
		fmt.Sprintf("Sequential baseline: run on %d servers (%d chunks) and its wall time extrapolated linearly to %d chunks; its other columns are measured on the smaller run.", c.seqServers, chunksOf(c.seqServers, c.chunkSize), chunksOf(c.servers, c.chunkSize)))
	return t, nil
}

func (b *bench) sequentialRow(ctx context.Context, t *table) error {
	name := "baseline: sequential client (submit a chunk, poll it until done, next)"
	b.progress("quota: %s, %d servers", name, b.c.seqServers)
	res, err := b.sequential(ctx)
	if err != nil {
		return err
	}
	chunks := chunksOf(b.c.servers, b.c.chunkSize)
	wall := time.Duration(float64(res.wall) * float64(chunks) / float64(res.chunks))
	lb := b.lowerBound(chunks)
	q := float64(b.c.quota)
	t.add(res.check, name, fmt.Sprintf("%s (extrapolated from %s for %d servers)", secs(wall), secs(res.wall), res.servers), secs(lb),
		fmt.Sprintf("%.2f", wall.Seconds()/lb.Seconds()), fmt.Sprint(res.throttled()),
		pct(res.rateShare(cphsim.APIUpdateKeypair, q)), pct(res.rateShare(cphsim.APIListJobs, q)),
		fmt.Sprintf("%.4f", res.callsPerServer()))
	return nil
}

// scaleScenario runs cph-rekey with 1, 4 and 16 worker processes at the
// same Q: the fleet limiter must keep them all under the quota.
func (b *bench) scaleScenario(ctx context.Context) (*table, error) {
	c := b.c
	t := &table{
		title:  fmt.Sprintf("Scale-out: %d servers, Q = %d req/s per API, fleet limiter at Q, 1 to %d worker processes", c.servers, c.quota, c.scale[len(c.scale)-1]),
		header: append([]string{"worker processes"}, quotaHeader[1:]...),
	}
	for _, n := range c.scale {
		b.progress("scale: %d worker processes", n)
		res, err := b.rotate(ctx, rotationRun{workers: n, limiter: limiterFleet, submitRate: b.fleetRate(c.submitBurst), pollRate: b.fleetRate(c.pollBurst)})
		if err != nil {
			return t, fmt.Errorf("%d workers: %w", n, err)
		}
		b.quotaRow(t, fmt.Sprint(n), res)
	}
	t.notes = append(t.notes, "The configured rate equals the simulator's quota, so every 429 here is self-inflicted. Columns as in the Quota table.")
	return t, nil
}

// quietGap is how long a stretch without 429s must last to count as "the
// 429s stopped": longer than two of the limiter's cooldowns (2-3 s each,
// during which nobody calls), shorter than its 10 s recovery period.
const quietGap = 8 * time.Second

// halveScenario halves the simulator's UpdateKeypair quota once a share of
// the chunks is submitted, and measures how the fleet adapts.
func (b *bench) halveScenario(ctx context.Context) (*table, error) {
	c := b.c
	q := float64(c.quota)
	newQ := q / 2
	chunks := chunksOf(c.servers, c.chunkSize)
	trigger := int(math.Ceil(c.halveAt * float64(chunks)))
	t := &table{
		title: fmt.Sprintf("Quota halves mid-run: %d servers, %d worker processes, fleet limiter at Q = %d; UpdateKeypair quota → %g after %d of %d chunks",
			c.servers, c.workers, c.quota, newQ, trigger, chunks),
		header: []string{"halved at", "429s before / after", "429s stop after", "later 429s", "new-quota use once 429s stop", "new-quota use since halving", "wall", "check"},
	}
	var halvedAt time.Time
	var halveErr error
	onSample := func(s *sim, smp sample) {
		if halvedAt.IsZero() && halveErr == nil && accepted(smp.st, cphsim.APIUpdateKeypair) >= trigger {
			halveErr = s.setQuota(ctx, b, cphsim.APIUpdateKeypair, newQ)
			halvedAt = time.Now()
		}
	}
	b.progress("halve: %d workers, quota %g → %g", c.workers, q, newQ)
	res, err := b.rotate(ctx, rotationRun{workers: c.workers, limiter: limiterFleet, submitRate: b.fleetRate(c.submitBurst), pollRate: b.fleetRate(c.pollBurst), onSample: onSample})
	if err != nil {
		return t, err
	}
	if halveErr != nil {
		return t, fmt.Errorf("halve the quota: %w", halveErr)
	}
	if halvedAt.IsZero() {
		return t, fmt.Errorf("the run ended before %d chunks were submitted; nothing was halved", trigger)
	}
	h := analyseHalving(res, halvedAt, newQ)
	useStop := "n/a (submits ended within 2 s)"
	if h.spanAfterStop >= 2*time.Second {
		useStop = pct(h.useAfterStop)
	}
	start := res.samples[0].at
	t.add(res.check, secs(halvedAt.Sub(start)), fmt.Sprintf("%d / %d", h.before, h.after), secs(h.stopAfter),
		fmt.Sprint(h.later), useStop, pct(h.useSinceHalving), secs(res.wall))
	t.notes = append(t.notes,
		fmt.Sprintf("Only UpdateKeypair 429s are counted. \"429s stop after\" = time from the halving to the last 429 followed by at least %s without one (or by the end of the submits); \"later 429s\" come after that, when the limiter probes above the quota it learned.", quietGap),
		"New-quota use = UpdateKeypair calls served per second ÷ Q/2, from the moment given up to the last submit.",
		halveUseNote(res, halvedAt, newQ))
	return t, nil
}

// halving is what analyseHalving finds.
type halving struct {
	before, after   int           // UpdateKeypair 429s before and after the halving
	stopAfter       time.Duration // from the halving to the last 429 of the adaptation
	later           int           // 429s after that
	spanAfterStop   time.Duration // from then to the last submit
	useAfterStop    float64
	useSinceHalving float64
}

func analyseHalving(r *result, halvedAt time.Time, newQ float64) halving {
	const api = cphsim.APIUpdateKeypair
	var h halving
	type hit struct {
		i int
		n int
	}
	var hits []hit // samples after the halving where 429s increased
	prev := 0
	for i, s := range r.samples {
		n := s.st.Throttled[api]
		switch {
		case n > prev && s.at.Before(halvedAt):
			h.before += n - prev
		case n > prev:
			h.after += n - prev
			hits = append(hits, hit{i, n - prev})
		}
		prev = n
	}
	total := accepted(r.final, api)
	end, _ := r.crossing(api, total)
	stop := halvedAt
	stopIdx := -1
	for k, x := range hits {
		at := r.samples[x.i].at
		if k+1 == len(hits) || r.samples[hits[k+1].i].at.Sub(at) >= quietGap || !r.samples[hits[k+1].i].at.Before(end) {
			stop, stopIdx = at, x.i
			for _, y := range hits[k+1:] {
				h.later += y.n
			}
			break
		}
	}
	h.stopAfter = max(0, stop.Sub(halvedAt))
	h.spanAfterStop = end.Sub(stop)
	servedAt := func(t time.Time) int {
		n := 0
		for _, s := range r.samples {
			if s.at.After(t) {
				break
			}
			n = accepted(s.st, api)
		}
		return n
	}
	atStop := servedAt(stop)
	if stopIdx >= 0 {
		atStop = accepted(r.samples[stopIdx].st, api)
	}
	if h.spanAfterStop > 0 {
		h.useAfterStop = float64(total-atStop) / h.spanAfterStop.Seconds() / newQ
	}
	if span := end.Sub(halvedAt); span > 0 {
		h.useSinceHalving = float64(total-servedAt(halvedAt)) / span.Seconds() / newQ
	}
	return h
}
