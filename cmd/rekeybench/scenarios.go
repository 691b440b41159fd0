package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
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

var quotaHeader = []string{"run", "wall", "lower bound", "ratio", "plan", "429s", "UpdateKeypair", "ListJobs", "ListServers (plan + verify)", "ShowServer",
	"API calls / server", "submit rate ÷ Q", "worker RSS", "check"}

// lowerBoundOf is the fastest a run can be: its first attempts' calls at Q
// and a job's latency, and with job failures the retry rounds too.
func (b *bench) lowerBoundOf(r *result, failRate float64) time.Duration {
	if failRate == 0 {
		return b.lowerBound(r.chunks)
	}
	// Retries of a share f come back as f·N, then f²·N servers; each round
	// waits a job, and the backoff before it (at least 2 s).
	calls := r.chunks
	left := float64(r.servers)
	for range r.rot.MaxAttempts - 1 {
		left *= failRate
		calls += chunksOf(int(math.Ceil(left)), b.c.chunkSize)
	}
	rounds := time.Duration(r.rot.MaxAttempts)
	return time.Duration(float64(calls)/float64(b.c.quota)*float64(time.Second)) + rounds*(b.c.jobLatency+b.c.jobJitter) + (rounds-1)*retryBase
}

// The moving-list run's churn: servers created and deleted a second.
const (
	churnCreate = 5.0
	churnDelete = 1.0
)

// retryBase is the worker's shortest backoff before a retry.
const retryBase = tasks.DefaultRetryBase

// quotaRow fills a row of quotaHeader from a cph-rekey run.
func (b *bench) quotaRow(t *table, name string, r *result, failRate float64) {
	lb := b.lowerBoundOf(r, failRate)
	q := float64(b.c.quota)
	c := r.final.Calls
	rss := "n/a"
	if r.rss > 0 {
		rss = fmt.Sprintf("%d MiB", r.rss>>20)
	}
	t.add(r.check, name, secs(r.wall), secs(lb), fmt.Sprintf("%.2f", r.wall.Seconds()/lb.Seconds()), secs(r.plan),
		fmt.Sprint(r.throttled()), fmt.Sprint(c[cphsim.APIUpdateKeypair]), fmt.Sprint(c[cphsim.APIListJobs]),
		fmt.Sprintf("%d + %d", r.planned, c[cphsim.APIListServers]-r.planned), fmt.Sprint(c[cphsim.APIShowServer]),
		fmt.Sprintf("%.4f", r.callsPerServer()), pct(r.rateShare(cphsim.APIUpdateKeypair, q)), rss)
}

// defaultsScenario runs cph-rekey at its defaults with every API at Q:
// once per --fail-rates, on a moving list, without places and with
// --verify=false, each again with every API answer waiting --latency;
// with baselines, then a sequential client and asynq's per-process
// limiter at Q and at Q/4. With --latency, a second table sets each
// latency run beside its 0 ms twin.
func (b *bench) defaultsScenario(ctx context.Context, baselines bool) ([]*table, error) {
	c := b.c
	q := float64(c.quota)
	title := "Defaults"
	if baselines {
		title = "Quota"
	}
	t := &table{
		title: fmt.Sprintf("%s: %d servers (the whole project), chunk %d, Q = %d req/s for every API, job latency %s, API latency %s, %d worker processes, verification on",
			title, c.servers, c.chunkSize, c.quota, c.jobLatency, c.apiLatency.both(), c.workers),
		header: quotaHeader,
	}
	ts := []*table{t}
	type run struct {
		name string
		rr   rotationRun
	}
	fleet := rotationRun{workers: c.workers, limiter: limiterFleet, submitRate: b.fleetRate(c.submitBurst), pollRate: b.fleetRate(c.pollBurst)}
	var runs []run
	for _, f := range c.failRates {
		rr := fleet
		rr.failRate = f
		runs = append(runs, run{fmt.Sprintf("cph-rekey, defaults, %s transient job failures", pct(f)), rr})
	}
	churn := fleet
	churn.churn = [2]float64{churnCreate, churnDelete}
	runs = append(runs, run{fmt.Sprintf("cph-rekey, defaults, a moving list: %g servers created and %g deleted a second, 0 %% failures", churnCreate, churnDelete), churn})
	unplaced := fleet
	unplaced.enqueue = []string{"--skip-matching=false"}
	runs = append(runs, run{"cph-rekey, defaults but --skip-matching=false (no places from a plan), 0 % failures", unplaced})
	noVerify := fleet
	noVerify.enqueue = []string{"--verify=false"}
	runs = append(runs, run{"cph-rekey, defaults but --verify=false, 0 % failures", noVerify})
	if c.rows != "" {
		var picked []run
		for _, r := range runs {
			for _, text := range strings.Split(c.rows, ",") {
				text = strings.TrimSpace(text)
				if text != "" && strings.Contains(strings.ToLower(r.name), strings.ToLower(text)) {
					picked = append(picked, r)
					break
				}
			}
		}
		if len(picked) == 0 {
			return ts, fmt.Errorf("--rows %q: no row's name holds any of these", c.rows)
		}
		runs = picked
	}
	// Each run again at a real gateway's round trip, right after its 0 ms
	// twin, so the two see the same machine.
	twins := len(runs)
	if c.apiLatency.mean > 0 {
		var both []run
		for _, r := range runs {
			slow := r.rr
			slow.latency = c.apiLatency
			both = append(both, r, run{fmt.Sprintf("%s, API latency %s", r.name, c.apiLatency), slow})
		}
		runs = both
	}
	if baselines {
		local := func(rate string) rotationRun {
			return rotationRun{workers: c.workers, limiter: limiterLocal, submitRate: rate, pollRate: rate, readRate: rate}
		}
		runs = append(runs,
			run{fmt.Sprintf("baseline: %d workers, local x/time/rate at Q each, 0 %% failures", c.workers), local(perSecond(q))},
			run{fmt.Sprintf("baseline: %d workers, local x/time/rate at Q/%d each, 0 %% failures", c.workers, c.workers), local(perSecond(q / float64(c.workers)))})
	}
	var (
		still, moving time.Duration
		names         []string  // the twins' names, in order
		results       []*result // and their runs
	)
	for i, r := range runs {
		b.progress("%s: %s", strings.ToLower(title), r.name)
		res, err := b.rotate(ctx, r.rr)
		if err != nil {
			return ts, fmt.Errorf("%s: %w", r.name, err)
		}
		b.quotaRow(t, r.name, res, r.rr.failRate)
		if c.apiLatency.mean > 0 && i < 2*twins {
			names, results = append(names, r.name), append(results, res)
		}
		switch {
		case r.rr.latency.mean > 0:
		case r.rr.churn != [2]float64{}:
			moving = res.wall
		case r.rr.failRate == 0 && len(r.rr.enqueue) == 0 && still == 0:
			still = res.wall
		}
	}
	if baselines {
		if err := b.sequentialRow(ctx, t); err != nil {
			return ts, err
		}
	}
	t.notes = append(t.notes,
		fmt.Sprintf("Lower bound = %d UpdateKeypair calls ÷ Q + job latency (%s). With job failures it adds the retry rounds: their UpdateKeypair calls at Q, and for each of the %d attempts a job's latency and (between them) the shortest backoff, %s. Wall = the rotation's created → finished time in Redis (enqueue's planning excluded; its reads are counted). Plan = enqueue start, from its start to its exit: reading the list's pages, freezing the rotation, enqueueing its chunks.",
			chunksOf(c.servers, c.chunkSize), c.jobLatency+c.jobJitter, tasks.DefaultMaxAttempts, retryBase),
		"API calls count every request to every API, 429s included: UpdateKeypair, ListJobs, ListServers (enqueue's plan, then verification by pages), ShowServer (verification of single servers). The floor is 0.04 a server: one plan page, one submit, one poll and one verification page per 100 servers.",
		"Submit rate ÷ Q = UpdateKeypair calls served per second from the API's first served call to its last, ÷ Q. Worker RSS = the largest peak RSS (VmHWM) of the worker processes.")
	if still > 0 && moving > 0 {
		t.notes = append(t.notes, fmt.Sprintf("A moving list: the simulator creates %g servers a second on top of the list (each pushes every page down by one) and deletes %g at random, from its start, so the plan reads a moving list too; its wall is %.2f × the still fleet's. A deleted target is checked to be skipped as deleted (or failed with the API's answer for a deleted server, or succeeded before it went).",
			churnCreate, churnDelete, moving.Seconds()/still.Seconds()))
	}
	t.notes = append(t.notes, "No places: with --skip-matching=false the plan does not read the list; verification sweeps it once (a read per 100 servers of the project), learning where the targets stand, instead of one ShowServer per server.")
	if baselines {
		t.notes = append(t.notes, fmt.Sprintf("Sequential baseline: run on %d servers (%d chunks) with --verify=false semantics (no read-back) and its wall time extrapolated linearly to %d chunks; its other columns are measured on the smaller run.",
			c.seqServers, chunksOf(c.seqServers, c.chunkSize), chunksOf(c.servers, c.chunkSize)))
	}
	if len(results) > 0 {
		ts = append(ts, b.latencyTable(names, results))
	}
	return ts, nil
}

// latencyTable sets each run at --latency beside its 0 ms twin: names and
// results hold the twins in pairs, the 0 ms run first. The plan's bound is
// its pages at the read rate, Q.
func (b *bench) latencyTable(names []string, results []*result) *table {
	c := b.c
	lat := c.apiLatency.String()
	t := &table{
		title: fmt.Sprintf("API latency: every answer waits %s (cphsim --latency %s --latency-jitter %s) vs 0 ms, %d servers, Q = %d req/s for every API, %d worker processes",
			lat, c.apiLatency.mean, c.apiLatency.jitter, c.servers, c.quota, c.workers),
		header: []string{"run", "wall at 0 ms", "wall at " + lat, "wall ratio", "plan at 0 ms", "plan at " + lat,
			"plan pages", "pages ÷ read rate", "plan ÷ (pages ÷ read rate) at " + lat, "429s at 0 ms / " + lat, "submit rate ÷ Q at " + lat, "check"},
	}
	q := float64(c.quota)
	for i := 0; i+1 < len(results); i += 2 {
		fast, slow := results[i], results[i+1]
		plan := "n/a (no plan reads)"
		bound := "n/a"
		if slow.planned > 0 {
			d := time.Duration(float64(slow.planned) / q * float64(time.Second))
			bound = secs(d)
			plan = fmt.Sprintf("%.2f", slow.plan.Seconds()/d.Seconds())
		}
		t.add(errors.Join(fast.check, slow.check), names[i], secs(fast.wall), secs(slow.wall), fmt.Sprintf("%.2f", slow.wall.Seconds()/fast.wall.Seconds()),
			secs(fast.plan), secs(slow.plan), fmt.Sprint(slow.planned), bound, plan,
			fmt.Sprintf("%d / %d", fast.throttled(), slow.throttled()), pct(slow.rateShare(cphsim.APIUpdateKeypair, q)))
	}
	t.notes = append(t.notes,
		fmt.Sprintf("Each row is a run of the table above at 0 ms and again with every API answer waiting %s (uniformly), run one after the other on the same machine; both are checked server by server (check: both ok). Wall ratio = the %s run's wall ÷ the 0 ms run's: how much of a real gateway's round trip reaches the rotation.", lat, lat),
		"Plan = enqueue start's duration; pages ÷ read rate = the plan's ListServers calls at the read rate Q, the fastest the quota lets the plan read them. 429s: every API's; the workers' rates equal the simulator's quotas, so each is self-inflicted.")
	return t
}

// subsetScenario rotates every --subset'th server of the project, so the
// servers to verify are spread over every page: verification must choose
// between a page per 100 servers of the project and a ShowServer per
// target.
func (b *bench) subsetScenario(ctx context.Context) (*table, error) {
	c := b.c
	t := &table{
		title: fmt.Sprintf("Subset: every %d%s server of a %d-server project, defaults, Q = %d req/s for every API, %d worker processes",
			c.subset, ordinal(c.subset), c.servers, c.quota, c.workers),
		header: quotaHeader,
	}
	rr := rotationRun{workers: c.workers, limiter: limiterFleet, submitRate: b.fleetRate(c.submitBurst), pollRate: b.fleetRate(c.pollBurst), every: c.subset}
	b.progress("subset: every %d%s server", c.subset, ordinal(c.subset))
	res, err := b.rotate(ctx, rr)
	if err != nil {
		return t, err
	}
	b.quotaRow(t, fmt.Sprintf("cph-rekey, defaults, %d servers", res.servers), res, 0)
	pages := chunksOf(c.servers, 100)
	readBound := time.Duration(float64(pages)/float64(c.quota)*float64(time.Second)) + c.jobLatency + c.jobJitter
	t.notes = append(t.notes, fmt.Sprintf("Verification's choice: the targets sit on all %d pages of the project, about %d a page, so reading the pages (at most %d calls) is cheaper than %d ShowServer calls, one a target; a page with a single target left is read with ShowServer. Columns as in the Defaults table.",
		pages, res.servers/max(pages, 1), pages, res.servers),
		fmt.Sprintf("Here verification's reads bound the rotation, not its submits: %d pages ÷ Q + job latency = %s (ratio %.2f); one ShowServer per target would take %s.",
			pages, secs(readBound), res.wall.Seconds()/readBound.Seconds(), secs(time.Duration(float64(res.servers)/float64(c.quota)*float64(time.Second)))))
	return t, nil
}

func ordinal(n int) string {
	switch {
	case n%100 >= 11 && n%100 <= 13:
		return "th"
	case n%10 == 1:
		return "st"
	case n%10 == 2:
		return "nd"
	case n%10 == 3:
		return "rd"
	}
	return "th"
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
	c := res.final.Calls
	t.add(res.check, name, fmt.Sprintf("%s (extrapolated from %s for %d servers)", secs(wall), secs(res.wall), res.servers), secs(lb),
		fmt.Sprintf("%.2f", wall.Seconds()/lb.Seconds()), "n/a", fmt.Sprint(res.throttled()),
		fmt.Sprint(c[cphsim.APIUpdateKeypair]), fmt.Sprint(c[cphsim.APIListJobs]), "0 + 0", "0",
		fmt.Sprintf("%.4f", res.callsPerServer()), pct(res.rateShare(cphsim.APIUpdateKeypair, q)), "n/a")
	return nil
}

// scaleScenario runs cph-rekey with 1, 4 and 16 worker processes at the
// same Q: the fleet limiter must keep them all under the quota.
func (b *bench) scaleScenario(ctx context.Context) (*table, error) {
	c := b.c
	t := &table{
		title:  fmt.Sprintf("Scale-out: %d servers, defaults, Q = %d req/s per API, fleet limiter at Q, 1 to %d worker processes", c.servers, c.quota, c.scale[len(c.scale)-1]),
		header: append([]string{"worker processes"}, quotaHeader[1:]...),
	}
	for _, n := range c.scale {
		b.progress("scale: %d worker processes", n)
		res, err := b.rotate(ctx, rotationRun{workers: n, limiter: limiterFleet, submitRate: b.fleetRate(c.submitBurst), pollRate: b.fleetRate(c.pollBurst)})
		if err != nil {
			return t, fmt.Errorf("%d workers: %w", n, err)
		}
		b.quotaRow(t, fmt.Sprint(n), res, 0)
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
