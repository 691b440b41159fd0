package tasks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// pollLimit bounds the batches one tick polls; the rest are polled by the
// next tick, due at once.
const pollLimit = 400

// earlyTry is how long an early poll waits for a ListJobs token: one that
// does not come that soon is wanted by polls that are due.
const earlyTry = 50 * time.Millisecond

// poll lists the jobs of every batch whose poll is due, a ListJobs call for
// up to 20 batches of up to 100 jobs in all (one page), and records every
// server whose job has ended: failed ones are retried or fail, succeeded
// ones wait for verification (or succeed, without it). While its calls
// are out, batches that come due join them (until the round's deadline),
// so a slow API's calls overlap rather than wait for a round's slowest. A
// call that must wait leaves its batches due for the next tick; a batch is
// never listed again for a read that had to wait. Then, while the ListJobs
// quota has room, it polls early the batches whose first poll is near and
// whose jobs should have ended by the latency learned so far.
//
// alongside (if not nil) runs with the stage's looks, at most every loopGap, so work
// that follows a poll (retries) is not held up while the polls stream.
func (h *Handler) poll(ctx context.Context, log *slog.Logger, rot *Rotation, r *round, alongside func(*Rotation, *round) error) error {
	p := &polling{h: h, log: log, started: map[int]bool{}}
	calls, soon, err := p.due(ctx, rot, r)
	if err != nil {
		return err
	}
	ran := r.now
	err = h.stream(ctx, r, rot, calls, p.limited.Load, func(rot *Rotation, sub *round) ([]stageCall, error) {
		if alongside != nil && sub.now.Sub(ran) >= loopGap {
			ran = sub.now
			if err := alongside(rot, sub); err != nil {
				return nil, err
			}
		}
		calls, soon, err := p.due(ctx, rot, sub)
		if err != nil || len(calls) > 0 || len(soon) == 0 {
			return calls, err
		}
		// Nothing is due: the quota may be idle, as at the end of a round.
		return p.early(ctx, rot, soon, sub)
	})
	if err != nil || p.limited.Load() || len(soon) == 0 {
		return err
	}
	ripe, _ := h.firstPoll(rot)
	return h.pollEarly(ctx, log, rot, soon, ripe, r)
}

// polling is one round of the poll stage: the batches it has taken up.
type polling struct {
	h       *Handler
	log     *slog.Logger
	mu      sync.Mutex
	started map[int]bool // batches this round has polled or is polling
	limited atomic.Bool  // a call had to wait for a token: start no more
}

// take takes batch n up for the round, unless it was already.
func (p *polling) take(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.started[n] {
		return false
	}
	p.started[n] = true
	return true
}

func (p *polling) taken(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.started[n]
}

// giveBack leaves batches to a later look of the round.
func (p *polling) giveBack(bs []*Batch) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, b := range bs {
		delete(p.started, b.N)
	}
}

// early returns a poll of the batches of soon whose jobs should have
// ended, taken up by the round, for a look that found nothing due while
// calls are out: it goes if a ListJobs token comes at once (the quota is
// idle), and gives them back otherwise, as pollEarly does at a round's
// end.
func (p *polling) early(ctx context.Context, rot *Rotation, soon []int, r *round) ([]stageCall, error) {
	h := p.h
	ripe, _ := h.firstPoll(rot)
	ready, err := h.ripened(ctx, rot, soon, ripe, r, p.taken)
	if err != nil || len(ready) == 0 {
		return nil, err
	}
	for _, b := range ready {
		p.take(b.N)
	}
	return []stageCall{{APIListJobs, func(ctx context.Context) (bool, error) {
		tctx, cancel := context.WithTimeout(ctx, earlyTry)
		err := h.limiterOf(rot).Wait(tctx, APIListJobs)
		cancel()
		if err != nil {
			p.giveBack(ready)
			return false, ctx.Err()
		}
		return h.listJobs(ctx, p.log, rot, ready, r)
	}}}, nil
}

// due returns the ListJobs calls for the batches due at r.now that the
// round has not taken up yet, recording at once those with nothing left
// to poll, and the batches due within the margin of their first poll.
func (p *polling) due(ctx context.Context, rot *Rotation, r *round) ([]stageCall, []int, error) {
	h := p.h
	ripe, first := h.firstPoll(rot)
	due, soon, after, err := h.store.DuePolls(ctx, rot.ID, r.now, r.now.Add(first-ripe), pollLimit)
	if err != nil {
		return nil, nil, err
	}
	r.at(after)
	if len(due) == pollLimit {
		r.at(r.now)
	}
	var open []*Batch
	for _, n := range due {
		if !p.take(n) {
			continue
		}
		b, err := h.store.Batch(ctx, rot.ID, n)
		if err != nil {
			return nil, nil, err
		}
		if b.Done || !b.Checkpointed {
			if _, err := h.store.Resolve(ctx, rot.ID, n, rot.waveOfBatch(n), nil, time.Time{}, false, r.now); err != nil {
				return nil, nil, err
			}
			continue
		}
		if openJobs(b) == 0 {
			// Only the answer's per-server errors are left to record.
			if err := h.recordPoll(ctx, p.log, rot, b, nil, r); err != nil {
				return nil, nil, err
			}
			continue
		}
		open = append(open, b)
	}
	var calls []stageCall
	for _, group := range jobGroups(open) {
		calls = append(calls, stageCall{APIListJobs, func(ctx context.Context) (bool, error) {
			if err := h.limiterOf(rot).Wait(ctx, APIListJobs); err != nil {
				r.waited(err)
				p.limited.Store(true)
				return true, nil
			}
			return h.listJobs(ctx, p.log, rot, group, r)
		}})
	}
	return calls, soon, nil
}

// pollRejectLimit is how many times a batch's own ListJobs call may be
// rejected (a 4xx other than 401, 403 and 429) before its open jobs'
// outcomes are taken for unknown and read back.
const pollRejectLimit = 3

// pollEarly polls, in one ListJobs call, batches of soon (due within the
// margin of their first poll) whose jobs should have ended, if a ListJobs
// token comes at once: the quota is idle, and the batches' jobs are seen
// to end a margin sooner (which shortens a rotation's tail). A batch
// polled before, or submitted less than ripe ago, waits for its poll.
func (h *Handler) pollEarly(ctx context.Context, log *slog.Logger, rot *Rotation, soon []int, ripe time.Duration, r *round) error {
	tctx, cancel := context.WithTimeout(ctx, earlyTry)
	err := h.limiterOf(rot).Wait(tctx, APIListJobs)
	cancel()
	if err != nil {
		return ctx.Err() // no room now: they are polled when due
	}
	ready, err := h.ripened(ctx, rot, soon, ripe, r, func(int) bool { return false })
	if err != nil || len(ready) == 0 {
		// Without any, the token is spent: no poll would take it as soon.
		return err
	}
	_, err = h.listJobs(ctx, log, rot, ready, r)
	return err
}

// ripened returns, soonest first, as many batches of soon as one ListJobs
// call carries whose jobs should have ended (submitted ripe ago), but
// those skip names; a batch that does not fit waits for its poll. It asks
// for a round when the next one ripens.
func (h *Handler) ripened(ctx context.Context, rot *Rotation, soon []int, ripe time.Duration, r *round, skip func(n int) bool) ([]*Batch, error) {
	var ready []*Batch
	jobs := 0
	for _, n := range soon {
		if len(ready) == cph.MaxRequestIDs || jobs == cph.JobsPageSize {
			break
		}
		if skip(n) {
			continue
		}
		b, err := h.store.Batch(ctx, rot.ID, n)
		if err != nil {
			return nil, err
		}
		if b.Done || !b.Checkpointed || b.Round > 0 || openJobs(b) == 0 || jobs+len(b.Jobs) > cph.JobsPageSize {
			continue
		}
		if at := b.SubmittedAt.Add(ripe); at.After(r.now) {
			r.at(at)
			continue
		}
		ready = append(ready, b)
		jobs += len(b.Jobs)
	}
	return ready, nil
}

// listJobs makes one ListJobs call for group, with a token in hand, and
// records what it found. A 401 or 403 halts the rotation and leaves the
// batches due; a call the API rejects for good is repeated for each batch
// of the group alone, so one bad request id does not hold up the others;
// any other failure backs the batches' polls off. It reports whether the
// stage should start no more calls.
func (h *Handler) listJobs(ctx context.Context, log *slog.Logger, rot *Rotation, group []*Batch, r *round) (bool, error) {
	ids := make([]string, len(group))
	expected := 0
	for i, b := range group {
		ids[i] = b.RequestID
		expected += len(b.Jobs)
	}
	var jobs []cph.Job
	err := h.call(ctx, rot, APIListJobs, func(ctx context.Context) (err error) {
		jobs, err = h.apiOf(rot).ListJobsOf(ctx, expected, ids...)
		return err
	})
	switch {
	case err == nil:
		h.obs.PollRound(APIListJobs)
		for _, b := range group {
			if err := h.recordPoll(ctx, log, rot, b, jobs, r); err != nil {
				return true, err
			}
		}
		if d, ok := longestJob(jobs); ok {
			// Advisory: a failed write leaves the estimate as it was.
			if _, err := h.store.ObserveJobLatency(ctx, rot.ID, d); err != nil {
				log.WarnContext(ctx, "job latency not recorded", "err", err)
			}
		}
		return false, nil
	case ctx.Err() != nil:
		return true, ctx.Err()
	case cph.IsThrottled(err):
		r.waited(h.throttled(ctx, rot, APIListJobs, err))
		return true, nil
	}
	if denied, err := h.denied(ctx, log, rot, APIListJobs, err); err != nil || denied {
		// Nothing is recorded: the batches stay due for the first tick
		// after resume.
		return true, err
	}
	if rejected(err) {
		if len(group) == 1 {
			return false, h.pollRejected(ctx, log, rot, group[0], err, r)
		}
		log.WarnContext(ctx, "ListJobs rejected a call for several batches; polling them one at a time",
			"request_ids", ids, "err", err)
		for _, b := range group {
			if err := h.limiterOf(rot).Wait(ctx, APIListJobs); err != nil {
				r.waited(err)
				return true, nil
			}
			if stop, err := h.listJobs(ctx, log, rot, []*Batch{b}, r); err != nil || stop {
				return stop, err
			}
		}
		return false, nil
	}
	log.WarnContext(ctx, "ListJobs failed", "request_ids", ids, "err", err)
	for _, b := range group {
		if err := h.pollFailed(ctx, log, rot, b, err, r); err != nil {
			return true, err
		}
	}
	return false, nil
}

// rejected reports whether err is an answer of the API that repeating the
// same call cannot change: a 4xx other than 401, 403 (denied) and 429.
func rejected(err error) bool {
	var ce *cph.Error
	return errors.As(err, &ce) && ce.StatusCode >= 400 && ce.StatusCode < 500 && ce.Kind == cph.KindPermanent
}

// longestJob returns the longest duration (end_time - begin_time) of the
// ended jobs listed. CPH gives the times to the second, so a duration is
// off by less than a second either way; the longest of a page's jobs
// rounds up for at least one of them unless they all take whole seconds,
// so it does not fall short of the jobs' real latency.
func longestJob(jobs []cph.Job) (time.Duration, bool) {
	var longest time.Duration
	found := false
	for _, j := range jobs {
		if !j.Status.Done() {
			continue
		}
		begin, err1 := time.Parse(time.RFC3339, j.BeginTime)
		end, err2 := time.Parse(time.RFC3339, j.EndTime)
		if err1 != nil || err2 != nil || end.Before(begin) {
			continue
		}
		longest, found = max(longest, end.Sub(begin)), true
	}
	return longest, found
}

// firstPoll returns how long after its submit a batch of rot is first
// polled (first), and how long after it its jobs should have ended (ripe,
// when it may be polled early): the job latency learned so far, and a
// fifth more for the poll, within Config.FirstPoll and Config.PollCap.
// Until a job has been seen to end, FirstPoll (and never early).
func (h *Handler) firstPoll(rot *Rotation) (ripe, first time.Duration) {
	if rot.jobLatency <= 0 {
		return h.cfg.FirstPoll, h.cfg.FirstPoll
	}
	first = min(max(rot.jobLatency+rot.jobLatency/5, h.cfg.FirstPoll), h.cfg.PollCap)
	return min(max(rot.jobLatency, h.cfg.FirstPoll), first), first
}

// openJobs counts a batch's servers whose job has not been seen to end.
func openJobs(b *Batch) int {
	n := 0
	for sid := range b.Jobs {
		if !b.Ended[sid] && !b.Resolved[sid] {
			n++
		}
	}
	return n
}

// jobGroups packs batches into ListJobs calls of at most 20 request ids and
// 100 jobs, so small batches (a wave's last chunk, the last retries) share
// a call. First-fit over batches by size, largest first.
func jobGroups(bs []*Batch) [][]*Batch {
	sorted := slices.Clone(bs)
	slices.SortStableFunc(sorted, func(a, b *Batch) int { return len(b.Jobs) - len(a.Jobs) })
	var groups [][]*Batch
	var jobs []int
	for _, b := range sorted {
		placed := false
		for i, g := range groups {
			if b.Rejected > 0 {
				break
			}
			if len(g) < cph.MaxRequestIDs && jobs[i]+len(b.Jobs) <= cph.JobsPageSize {
				groups[i] = append(g, b)
				jobs[i] += len(b.Jobs)
				placed = true
				break
			}
		}
		if !placed && b.Rejected > 0 {
			// Rejected before: polled alone until it is settled, so it
			// does not hold up the others.
			groups = append(groups, []*Batch{b})
			jobs = append(jobs, cph.JobsPageSize+1)
			continue
		}
		if !placed {
			groups = append(groups, []*Batch{b})
			jobs = append(jobs, len(b.Jobs))
		}
	}
	return groups
}

// recordPoll records what a poll of batch b found (jobs nil: no call was
// needed) and schedules its next poll while jobs run.
func (h *Handler) recordPoll(ctx context.Context, log *slog.Logger, rot *Rotation, b *Batch, jobs []cph.Job, r *round) error {
	rs := h.resolveAnswer(rot, b, r.now)
	rs = append(rs, h.resolveJobs(rot, b, jobs, false, r.now)...)
	return h.record(ctx, log, rot, b, rs, r)
}

// pollFailed backs a batch's polls off after a failed ListJobs call. Once
// its jobs are past the job timeout (the API kept failing for as long as a
// job may run), their outcomes are unknown: the servers' keypairs are read
// back before any is submitted again.
func (h *Handler) pollFailed(ctx context.Context, log *slog.Logger, rot *Rotation, b *Batch, err error, r *round) error {
	if r.now.Sub(b.SubmittedAt) <= h.cfg.JobTimeout {
		return h.pollLater(ctx, rot, b, r, h.failedPollDelay(rot, b.Round+1))
	}
	log.ErrorContext(ctx, "ListJobs kept failing past the job timeout; the open jobs' outcomes are unknown and are read back",
		"chunk", b.N, "request_id", b.RequestID, "err", err)
	return h.record(ctx, log, rot, b, h.resolveJobs(rot, b, nil, true, r.now), r)
}

// pollRejected handles a ListJobs call for batch b alone that the API
// rejected for good: the batch is polled again (alone) after a backoff,
// and after pollRejectLimit rejections its open jobs' outcomes are taken
// for unknown and their servers' keypairs are read back.
func (h *Handler) pollRejected(ctx context.Context, log *slog.Logger, rot *Rotation, b *Batch, err error, r *round) error {
	n, serr := h.store.PollRejected(ctx, rot.ID, b.N)
	if serr != nil {
		return serr
	}
	if n < pollRejectLimit {
		log.WarnContext(ctx, "ListJobs rejected this batch's request id; polling it again alone",
			"chunk", b.N, "request_id", b.RequestID, "rejected", n, "err", err)
		return h.pollLater(ctx, rot, b, r, h.pollDelay(rot, b.Round+1))
	}
	log.ErrorContext(ctx, "ListJobs keeps rejecting this batch's request id; the open jobs' outcomes are unknown and are read back",
		"chunk", b.N, "request_id", b.RequestID, "rejected", n, "err", err)
	return h.record(ctx, log, rot, b, h.resolveJobs(rot, b, nil, true, r.now), r)
}

// pollLater schedules batch b's next poll in d.
func (h *Handler) pollLater(ctx context.Context, rot *Rotation, b *Batch, r *round, d time.Duration) error {
	next := r.now.Add(d)
	r.at(next)
	_, err := h.store.Resolve(ctx, rot.ID, b.N, rot.waveOfBatch(b.N), nil, next, false, r.now)
	return err
}

// record writes resolutions of batch b and keeps it polled while some of
// its jobs have not ended.
func (h *Handler) record(ctx context.Context, log *slog.Logger, rot *Rotation, b *Batch, rs []Resolution, r *round) error {
	left := openJobs(b)
	for _, x := range rs {
		if _, ok := b.Jobs[x.ServerID]; ok {
			left--
		}
	}
	var next time.Time
	if left > 0 {
		next = r.now.Add(h.pollDelay(rot, b.Round+1))
		r.at(next)
	}
	wctx, cancel := detached(ctx)
	defer cancel()
	res, err := h.store.Resolve(wctx, rot.ID, b.N, rot.waveOfBatch(b.N), rs, next, false, r.now)
	if err != nil {
		return err
	}
	h.countOutcomes(rs, res)
	r.resolved(res)
	if err := h.keypairMissing(wctx, log, rot, rs); err != nil {
		return err
	}
	for _, x := range rs {
		if x.Verify {
			r.verifying()
			break
		}
	}
	if res.Complete {
		log.DebugContext(ctx, "batch complete", "chunk", b.N, "request_id", b.RequestID)
	}
	return nil
}

// keypairMissing halts the rotation (state failed, as a denial does) when
// CPH answered that a server's target keypair does not exist: every other
// server naming that keypair would fail the same way, one call at a time,
// until the error budget noticed. The servers already answered stay
// failed; in-flight chunks are still polled; no new chunk is submitted
// until the keypair is imported into the project's KPS and the rotation
// resumed.
func (h *Handler) keypairMissing(ctx context.Context, log *slog.Logger, rot *Rotation, rs []Resolution) error {
	for _, x := range rs {
		if x.Code != cph.CodeKeypairNotFound || x.Retry != nil {
			continue
		}
		keypair := cmp.Or(x.Entry.Keypair, rot.Keypair)
		// No server id in the reason: Halt adds a reason once, so one
		// missing keypair is named once however many servers it fails.
		reason := fmt.Sprintf("keypair %s does not exist in the project: CPH failed its servers with %s (%s); "+
			"import the keypair into the project's KPS, then resume", keypair, x.Code, x.Message)
		halted, err := h.store.Halt(ctx, rot.ID, reason, false)
		if err != nil {
			return err
		}
		if halted {
			log.ErrorContext(ctx, "rotation halted: the target keypair does not exist", "keypair", keypair,
				"server_id", x.ServerID, "code", x.Code)
		}
		return nil
	}
	return nil
}

// resolveAnswer turns the UpdateKeypair answer's per-server errors into
// resolutions.
//
// CPH answers a server id it does not know with CPS.0016, "server_id is
// invalid.": for a server the plan saw in the list, that most likely means
// it was deleted since. Such a server is read back first (verification
// tells a deleted server from one that is there and refused), so the
// report says which.
func (h *Handler) resolveAnswer(rot *Rotation, b *Batch, now time.Time) []Resolution {
	var rs []Resolution
	for _, e := range b.Servers {
		ee, ok := b.Errors[e.ServerID]
		if !ok || b.Resolved[e.ServerID] || b.Ended[e.ServerID] {
			continue
		}
		if ee[0] == cph.CodeInvalidServer && e.Pos >= 0 && rot.Verify {
			rs = append(rs, Resolution{ServerID: e.ServerID, Verify: true, Unknown: true, Code: ee[0], Message: ee[1],
				Attempts: e.Attempt, Entry: e})
			continue
		}
		rs = append(rs, h.failure(rot, e, "", ee[0], ee[1], now))
	}
	return rs
}

// resolveJobs turns the listed jobs into resolutions for the batch's
// servers whose job had not been seen to end. A job still running (or not
// listed) after the job timeout, and with unknown set (jobs nil) every
// open job, has an unknown outcome: its server waits in the verification
// set to be read back, never submitted again unread.
func (h *Handler) resolveJobs(rot *Rotation, b *Batch, jobs []cph.Job, unknown bool, now time.Time) []Resolution {
	byID := make(map[string]cph.Job, len(jobs))
	for _, j := range jobs {
		byID[j.JobID] = j
	}
	timedOut := now.Sub(b.SubmittedAt) > h.cfg.JobTimeout
	var rs []Resolution
	for _, e := range b.Servers {
		jobID, ok := b.Jobs[e.ServerID]
		if !ok || b.Ended[e.ServerID] || b.Resolved[e.ServerID] {
			continue
		}
		j, listed := byID[jobID]
		switch {
		case unknown:
			rs = append(rs, unknownOutcome(e, jobID))
		case listed && j.Status == cph.JobSucceeded && rot.Verify:
			rs = append(rs, Resolution{ServerID: e.ServerID, Verify: true, JobID: jobID, Attempts: e.Attempt, Entry: e})
		case listed && j.Status == cph.JobSucceeded:
			rs = append(rs, Resolution{ServerID: e.ServerID, Outcome: OutcomeSucceeded, JobID: jobID, Attempts: e.Attempt, Entry: e})
		case listed && j.Status == cph.JobFailed:
			rs = append(rs, h.failure(rot, e, jobID, j.ErrorCode, j.ErrorMsg, now))
		case timedOut:
			rs = append(rs, unknownOutcome(e, jobID))
		}
	}
	return rs
}

// unknownOutcome resolves a server whose job's outcome could not be
// learned: it is read back (with or without the rotation's verification),
// and only then succeeded or retried.
func unknownOutcome(e Entry, jobID string) Resolution {
	return Resolution{ServerID: e.ServerID, Verify: true, Unknown: true, JobID: jobID, Attempts: e.Attempt, Entry: e}
}

// failure resolves a server whose job (or submission) failed: into the
// retry pool, after a full-jitter backoff, when the cause is transient and
// attempts remain; failed otherwise. A cancelled rotation retries nothing.
func (h *Handler) failure(rot *Rotation, e Entry, jobID, code, msg string, now time.Time) Resolution {
	r := Resolution{ServerID: e.ServerID, Outcome: OutcomeFailed, JobID: jobID, Code: code, Message: msg, Attempts: e.Attempt, Entry: e}
	if code == "" {
		r.Code = "UNKNOWN"
	}
	switch {
	case rot.State == StateCancelled:
		r.Outcome = OutcomeCancelled
	case cph.ClassifyCode(code) != cph.KindPermanent && e.Attempt < rot.MaxAttempts:
		next := e
		next.Attempt++
		r.Retry = &next
		r.RetryAt = now.Add(h.cfg.RetryBase + fullJitter(h.cfg.RetryBase, h.cfg.RetryCap, e.Attempt-1))
	}
	return r
}

// pollDelay grows by half each round from the rotation's first poll to
// PollCap, with ±20 % jitter so batches submitted together do not poll
// together for ever.
func (h *Handler) pollDelay(rot *Rotation, round int) time.Duration {
	_, d := h.firstPoll(rot)
	for i := 1; i < round && d < h.cfg.PollCap; i++ {
		d = d * 3 / 2
	}
	d = min(d, h.cfg.PollCap)
	return d*4/5 + rand.N(d*2/5+1)
}

// failedPollDelay is the backoff after a ListJobs call that failed for a
// transient reason (a 5xx, a timeout): full jitter over RetryBase doubled
// each round, as AWS SDKs retry, and never longer than the round's
// pollDelay. The batch's jobs may well have ended, and waiting a whole
// poll delay would add it to the rotation's tail, while an API that keeps
// failing is asked less and less often.
func (h *Handler) failedPollDelay(rot *Rotation, round int) time.Duration {
	d := h.cfg.RetryBase << min(max(round-1, 0), 6)
	return min(100*time.Millisecond+rand.N(d), h.pollDelay(rot, round))
}

func (h *Handler) countOutcomes(rs []Resolution, res Resolved) {
	if res.Recorded == 0 {
		return
	}
	n := map[string]int{}
	for _, r := range rs {
		switch {
		case r.Retry != nil:
			n["retried"]++
		case r.Verify:
		default:
			n[string(r.Outcome)]++
		}
	}
	for o, c := range n {
		h.obs.ServerOutcome(o, c)
	}
}
