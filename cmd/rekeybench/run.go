package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// sample is the simulator's counters at one moment.
type sample struct {
	at time.Time
	st cphsim.Stats
}

// result is one measured run.
type result struct {
	servers int
	chunks  int // UpdateKeypair calls the fleet needs
	wall    time.Duration
	samples []sample     // /_sim/stats every --sample, in order
	final   cphsim.Stats // after the run, the plan's reads included
	rot     *tasks.Rotation
	planned int           // ListServers calls of enqueue's plan
	plan    time.Duration // enqueue start, from its start to its exit
	rss     int64         // the largest peak RSS of the worker processes
	check   error         // nil when the run's outcome is right
}

// accepted counts the calls of api the simulator served (not 429, not a
// fault).
func accepted(st cphsim.Stats, api cphsim.API) int {
	return st.Calls[api] - st.Throttled[api] - st.Injected5xx[api] - st.Dropped[api]
}

// throttled counts the 429s of every API.
func (r *result) throttled() int {
	n := 0
	for _, v := range r.final.Throttled {
		n += v
	}
	return n
}

// callsPerServer is every request to every API, 429s included, per server.
func (r *result) callsPerServer() float64 {
	n := 0
	for _, v := range r.final.Calls {
		n += v
	}
	return float64(n) / float64(r.servers)
}

// crossing returns when api's served calls first reached n, as the middle
// of the two samples around it (so within half a sample period).
func (r *result) crossing(api cphsim.API, n int) (time.Time, bool) {
	for i, s := range r.samples {
		if accepted(s.st, api) >= n {
			if i == 0 {
				return s.at, true
			}
			prev := r.samples[i-1].at
			return prev.Add(s.at.Sub(prev) / 2), true
		}
	}
	return time.Time{}, false
}

// rateShare is the rate at which api served calls while it was busy, from
// its first served call to its last, as a share of q. A limiter that keeps
// the API saturated scores 100 %; using the bucket's burst on top can
// score a little more.
func (r *result) rateShare(api cphsim.API, q float64) float64 {
	n := accepted(r.final, api)
	first, ok1 := r.crossing(api, 1)
	last, ok2 := r.crossing(api, n)
	if !ok1 || !ok2 || n < 2 || !last.After(first) {
		return 0
	}
	return float64(n-1) / last.Sub(first).Seconds() / q
}

// lowerBound is the fastest a fleet of n servers can be rotated at quota q:
// every chunk's UpdateKeypair at q a second, then the last jobs' latency.
func (b *bench) lowerBound(chunks int) time.Duration {
	return time.Duration(float64(chunks)/float64(b.c.quota)*float64(time.Second)) + b.c.jobLatency + b.c.jobJitter
}

func chunksOf(servers, size int) int { return (servers + size - 1) / size }

// sampler reads /_sim/stats every --sample until stopped, calling onSample
// (if set) with each sample from its own goroutine.
type sampler struct {
	stop    chan struct{}
	done    chan struct{}
	samples []sample
	err     error
}

func (b *bench) startSampler(ctx context.Context, s *sim, onSample func(sample)) *sampler {
	sm := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(sm.done)
		tick := time.NewTicker(b.c.sample)
		defer tick.Stop()
		for {
			st, err := s.stats(ctx, b)
			if err != nil {
				sm.err = fmt.Errorf("sample simulator stats: %w", err)
				return
			}
			smp := sample{at: time.Now(), st: st}
			sm.samples = append(sm.samples, smp)
			if onSample != nil {
				onSample(smp)
			}
			select {
			case <-sm.stop:
				return
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()
	return sm
}

// finish stops the sampler and returns its samples.
func (sm *sampler) finish() ([]sample, error) {
	close(sm.stop)
	<-sm.done
	return sm.samples, sm.err
}

// rotationRun is one cph-rekey run: worker processes with a limiter at
// given rates, against a fresh simulator and a flushed Redis.
type rotationRun struct {
	servers              int // 0: --servers
	workers              int
	limiter              string // fleet or local
	submitRate, pollRate string // worker --submit-rate and --poll-rate
	readRate             string // worker --read-rate; empty: the submit rate
	failRate             float64
	churn                [2]float64 // servers the simulator creates and deletes a second, from its start
	latency              latency    // every API answer's
	every                int        // rotate every every'th server of the project (0, 1: all)
	enqueue              []string   // extra flags of enqueue start
	onSample             func(*sim, sample)
}

// rotate runs a whole rotation of --servers servers and measures it. An
// error means the run could not be done; a wrong outcome is result.check.
func (b *bench) rotate(ctx context.Context, rr rotationRun) (res *result, err error) {
	b.runs++
	n := cmp.Or(rr.servers, b.c.servers)
	ctx, cancel := context.WithTimeout(ctx, b.c.runTimeout)
	defer cancel()
	if err := b.flush(ctx); err != nil {
		return nil, fmt.Errorf("flushdb: %w", err)
	}
	s, err := b.startSim(ctx, n, float64(b.c.quota), rr.failRate, rr.churn, rr.latency)
	if err != nil {
		return nil, err
	}
	defer s.stop(5 * time.Second)
	servers, err := s.servers(ctx, b)
	if err != nil {
		return nil, err
	}
	if rr.every > 1 {
		var some []cphsim.ServerState
		for i := 0; i < len(servers); i += rr.every {
			some = append(some, servers[i])
		}
		servers = some
	}
	file, err := b.writeTargets(servers)
	if err != nil {
		return nil, err
	}
	env := b.env(s.url)
	if rr.readRate == "" {
		rr.readRate = b.fleetRate(b.c.readBurst)
	}
	ws, err := b.startWorkers(ctx, rr.workers, env, rr.limiter, rr.submitRate, rr.pollRate, rr.readRate)
	if err != nil {
		return nil, err
	}
	defer stopAll(ws)

	var onSample func(sample)
	if rr.onSample != nil {
		onSample = func(smp sample) { rr.onSample(s, smp) }
	}
	sm := b.startSampler(ctx, s, onSample)
	planStart := time.Now()
	id, err := b.enqueueStart(ctx, env, file, rr.enqueue...)
	plan := time.Since(planStart)
	if err != nil {
		sm.finish()
		return nil, err
	}
	// Verification reads start after the first poll, seconds later: every
	// ListServers call so far was the plan's.
	planned, err := s.stats(ctx, b)
	if err != nil {
		sm.finish()
		return nil, err
	}
	store := tasks.NewStore(b.rdb, b.c.namespace)
	rot, err := b.waitFinished(ctx, store, id, append(ws, s.proc))
	samples, serr := sm.finish()
	if err = errors.Join(err, serr); err != nil {
		return nil, err
	}
	res = &result{servers: len(servers), chunks: chunksOf(len(servers), b.c.chunkSize), wall: rot.FinishedAt.Sub(rot.CreatedAt), samples: samples, rot: rot,
		planned: planned.Calls[cphsim.APIListServers], plan: plan}
	for _, w := range ws {
		res.rss = max(res.rss, w.peakRSS())
	}
	if err := b.finalSample(ctx, s, res); err != nil {
		return nil, err
	}
	after, err := s.servers(ctx, b)
	if err != nil {
		return nil, err
	}
	deleted, err := s.deleted(ctx, b)
	if err != nil {
		return nil, err
	}
	res.check = verifyRotation(ctx, store, rot, after, deleted, len(servers))
	return res, nil
}

// finalSample reads the simulator's counters after the run, also as the
// last sample: the run's last calls may have come after the sampler's last
// look.
func (b *bench) finalSample(ctx context.Context, s *sim, res *result) error {
	st, err := s.stats(ctx, b)
	if err != nil {
		return err
	}
	res.final = st
	res.samples = append(res.samples, sample{at: time.Now(), st: st})
	return b.writeTimeline(res.samples)
}

// writeTimeline writes the run's samples as CSV next to its logs, for a
// closer look at a run kept with --keep.
func (b *bench) writeTimeline(samples []sample) error {
	var sb strings.Builder
	sb.WriteString("seconds,update_calls,update_429,list_calls,list_429,jobs_running,servers_calls,servers_429,show_calls\n")
	for _, s := range samples {
		fmt.Fprintf(&sb, "%.3f,%d,%d,%d,%d,%d,%d,%d,%d\n", s.at.Sub(samples[0].at).Seconds(),
			s.st.Calls[cphsim.APIUpdateKeypair], s.st.Throttled[cphsim.APIUpdateKeypair],
			s.st.Calls[cphsim.APIListJobs], s.st.Throttled[cphsim.APIListJobs], s.st.JobsRunning,
			s.st.Calls[cphsim.APIListServers], s.st.Throttled[cphsim.APIListServers], s.st.Calls[cphsim.APIShowServer])
	}
	return os.WriteFile(filepath.Join(b.logDir, fmt.Sprintf("run%02d-timeline.csv", b.runs)), []byte(sb.String()), 0o600)
}

// waitFinished waits for the rotation to finish, watching that no process
// it depends on has died.
func (b *bench) waitFinished(ctx context.Context, store *tasks.Store, id string, ps []*proc) (*tasks.Rotation, error) {
	for {
		rot, err := store.Rotation(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("rotation %s: %w", id, err)
		}
		if rot.Finished() {
			return rot, nil
		}
		for _, p := range ps {
			if err := p.exited(); err != nil {
				return nil, fmt.Errorf("rotation %s at %+v: %w", id, rot.Counts, err)
			}
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return nil, fmt.Errorf("rotation %s not finished (%+v): %w", id, rot.Counts, err)
		}
	}
}

// verifyRotation checks a finished rotation of targets servers against the
// simulator: every target in the report exactly once; succeeded and on the
// new keypair in the simulator, or failed after its last attempt with the
// simulator's transient job failure and not on the new keypair; submitted
// no more often than its attempts and the measured unknown-outcome
// resubmissions explain. A target the simulator deleted during the run is
// skipped as deleted, failed with the API's answer for a deleted server,
// or succeeded before it was deleted.
func verifyRotation(ctx context.Context, store *tasks.Store, rot *tasks.Rotation, servers []cphsim.ServerState, deleted []string, targets int) error {
	c := rot.Counts
	if c.Pending != 0 || c.Running != 0 || c.Succeeded+c.Failed+c.Skipped != c.Total || c.Total != int64(targets) {
		return fmt.Errorf("counts %+v: want all %d servers succeeded, failed or skipped", c, targets)
	}
	gone := make(map[string]bool, len(deleted))
	for _, id := range deleted {
		gone[id] = true
	}
	byID := make(map[string]cphsim.ServerState, len(servers))
	for _, s := range servers {
		byID[s.ServerID] = s
	}
	seen := make(map[string]bool, targets)
	extra := 0
	err := store.Report(ctx, rot.ID, func(r tasks.ReportRow) error {
		s, ok := byID[r.ServerID]
		if gone[r.ServerID] {
			if seen[r.ServerID] {
				return fmt.Errorf("server %s appears twice in the report", r.ServerID)
			}
			seen[r.ServerID] = true
			switch {
			case r.Outcome == tasks.OutcomeSkipped && r.ErrorCode == tasks.CodeServerDeleted,
				r.Outcome == tasks.OutcomeSucceeded,
				r.Outcome == tasks.OutcomeFailed && (r.ErrorCode == "CPS.0016" || r.ErrorCode == cphsim.JobCodeServerDeleted):
				return nil
			}
			return fmt.Errorf("deleted server %s is %s (%s %s)", r.ServerID, r.Outcome, r.ErrorCode, r.ErrorMsg)
		}
		switch {
		case !ok:
			return fmt.Errorf("report names server %s, which the simulator does not have", r.ServerID)
		case seen[r.ServerID]:
			return fmt.Errorf("server %s appears twice in the report", r.ServerID)
		case r.Outcome == tasks.OutcomeSucceeded && s.KeypairName != rot.Keypair:
			return fmt.Errorf("server %s reported succeeded, but the simulator has it on %q", r.ServerID, s.KeypairName)
		case r.Outcome == tasks.OutcomeFailed && (r.ErrorCode != cphsim.JobCodeTransient || r.Attempts != rot.MaxAttempts || s.KeypairName == rot.Keypair):
			return fmt.Errorf("server %s failed after %d attempts with %s %s, on %q in the simulator; want only transient job failures after %d attempts",
				r.ServerID, r.Attempts, r.ErrorCode, r.ErrorMsg, s.KeypairName, rot.MaxAttempts)
		case r.Outcome != tasks.OutcomeSucceeded && r.Outcome != tasks.OutcomeFailed:
			return fmt.Errorf("server %s is %s (%s %s)", r.ServerID, r.Outcome, r.ErrorCode, r.ErrorMsg)
		}
		seen[r.ServerID] = true
		extra += max(0, s.Submits-r.Attempts)
		return nil
	})
	if err != nil {
		return err
	}
	if len(seen) != targets {
		return fmt.Errorf("report has %d servers, want %d", len(seen), targets)
	}
	if allowed := int(c.Resubmitted) * rot.ChunkSize; extra > allowed {
		return fmt.Errorf("%d submissions beyond the servers' attempts; %d resubmitted batches explain at most %d", extra, c.Resubmitted, allowed)
	}
	return nil
}

// sequential is the sequential baseline: one in-process client submits a
// chunk, polls it until every job has ended, then takes the next, each API
// paced at the quota. It runs on --seq-servers servers.
func (b *bench) sequential(ctx context.Context) (*result, error) {
	b.runs++
	n := b.c.seqServers
	ctx, cancel := context.WithTimeout(ctx, b.c.runTimeout)
	defer cancel()
	q := float64(b.c.quota)
	s, err := b.startSim(ctx, n, q, 0, [2]float64{}, latency{})
	if err != nil {
		return nil, err
	}
	defer s.stop(5 * time.Second)
	servers, err := s.servers(ctx, b)
	if err != nil {
		return nil, err
	}
	client, err := cph.NewClient(cph.Config{Endpoint: s.url, ProjectID: benchProject,
		Credentials: cph.Credentials{AccessKey: benchAK, SecretKey: benchSK}})
	if err != nil {
		return nil, err
	}
	submitLim, pollLim := rate.NewLimiter(rate.Limit(q), b.c.quota), rate.NewLimiter(rate.Limit(q), b.c.quota)
	sm := b.startSampler(ctx, s, nil)
	start := time.Now()
	for lo := 0; lo < n; lo += b.c.chunkSize {
		var chunk []cph.ServerKeypair
		for _, sv := range servers[lo:min(n, lo+b.c.chunkSize)] {
			chunk = append(chunk, cph.ServerKeypair{ServerID: sv.ServerID, KeypairName: benchKeypair})
		}
		if err := rotateChunk(ctx, client, submitLim, pollLim, chunk, cmp.Or(b.c.firstPoll, defaultFirstPoll)); err != nil {
			sm.finish()
			return nil, fmt.Errorf("sequential baseline, chunk at server %d: %w", lo, err)
		}
	}
	res := &result{servers: n, chunks: chunksOf(n, b.c.chunkSize), wall: time.Since(start)}
	if res.samples, err = sm.finish(); err != nil {
		return nil, err
	}
	if err := b.finalSample(ctx, s, res); err != nil {
		return nil, err
	}
	after, err := s.servers(ctx, b)
	if err != nil {
		return nil, err
	}
	for _, sv := range after {
		if sv.KeypairName != benchKeypair || sv.Submits != 1 {
			res.check = fmt.Errorf("server %s on %q after %d submissions, want %s after 1", sv.ServerID, sv.KeypairName, sv.Submits, benchKeypair)
			break
		}
	}
	return res, nil
}

// defaultFirstPoll is the worker's --first-poll default, which the
// sequential client uses too.
const defaultFirstPoll = tasks.DefaultFirstPoll

// seqPollEvery is the sequential client's poll interval after its first
// poll: short, since it has nothing else to do.
const seqPollEvery = 500 * time.Millisecond

// rotateChunk submits one chunk and polls until its jobs have ended. A 429
// waits 2 s (Huawei's advice) and tries again.
func rotateChunk(ctx context.Context, c *cph.Client, submitLim, pollLim *rate.Limiter, chunk []cph.ServerKeypair, firstPoll time.Duration) error {
	var resp *cph.UpdateKeypairResponse
	for {
		if err := submitLim.Wait(ctx); err != nil {
			return err
		}
		var err error
		if resp, err = c.UpdateKeypair(ctx, chunk); err == nil {
			break
		} else if !cph.IsThrottled(err) {
			return err
		}
		if err := sleep(ctx, 2*time.Second); err != nil {
			return err
		}
	}
	for _, j := range resp.Jobs {
		if j.Failed() {
			return fmt.Errorf("server %s rejected: %s %s", j.ServerID, j.ErrorCode, j.ErrorMsg)
		}
	}
	wait := firstPoll
	for {
		if err := sleep(ctx, wait); err != nil {
			return err
		}
		wait = seqPollEvery
		if err := pollLim.Wait(ctx); err != nil {
			return err
		}
		jobs, err := c.ListJobs(ctx, resp.RequestID)
		if cph.IsThrottled(err) {
			wait = 2 * time.Second
			continue
		}
		if err != nil {
			return err
		}
		done := 0
		for _, j := range jobs {
			if j.Status.Done() {
				if j.Status != cph.JobSucceeded {
					return fmt.Errorf("job %s of server %s failed: %s %s", j.JobID, j.ServerID, j.ErrorCode, j.ErrorMsg)
				}
				done++
			}
		}
		if done == len(chunk) {
			return nil
		}
	}
}
