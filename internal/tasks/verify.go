package tasks

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/movinglist"
)

// verifyLimit bounds the servers one tick looks at for verification.
const verifyLimit = 20000

// fewToShow is how many servers a page read may leave unfound before the
// rest are read on their own (ShowServer) rather than looked for again.
const fewToShow = 5

// sweepPerRound bounds the pages one round of the sweep reads.
const sweepPerRound = 20

// verify reads back the keypair of servers whose job succeeded (or whose
// outcome is unknown), by the cheapest reads there are.
//
// A server the plan placed in the project's list is read with its
// neighbours, a window of the list (ListCloudPhoneServers, 100 servers a
// call) where the list has moved them since (movinglist): once no first
// attempt on the pages they span is in flight, and retried servers later,
// together, once none of them is in flight (or after
// Config.VerifyLinger). A server not found where it should stand is read
// on its own (ShowServer), which tells a deleted server from a moved one.
//
// Servers the plan did not place are read whichever way costs fewer
// calls: one ShowServer each, or a sweep of the whole list (one read per
// 100 servers of the project) that verifies those waiting and learns where
// the others stand.
//
// A read that must wait (rate limit, 429) leaves its servers for the next
// round and is never a failure. A read that fails is tried again; a server
// whose reads kept failing for Config.JobTimeout from the first failure is
// recorded with CodeVerifyUnavailable, never as a mismatch.
//
// While its reads are out, servers that come up for verification join
// them (until the round's deadline), read as a round of their own would
// read them, so a slow API's reads overlap rather than wait for the
// slowest of a round.
func (h *Handler) verify(ctx context.Context, log *slog.Logger, rot *Rotation, r *round) error {
	vr := &verifyRound{taken: map[string]bool{}}
	calls, err := h.verifyCalls(ctx, log, rot, r, vr)
	if err != nil {
		return err
	}
	err = h.stream(ctx, r, rot, calls, nil, func(rot *Rotation, sub *round) ([]stageCall, error) {
		return h.verifyCalls(ctx, log, rot, sub, vr)
	})
	if vr.list != nil {
		err = errors.Join(err, vr.list.save(ctx, h.store, rot.ID))
	}
	for _, v := range vr.vs {
		err = errors.Join(err, v.save(ctx))
	}
	return err
}

// verifyRound is what a round of the verification stage has taken up,
// shared by the looks it takes while its reads are out (only the stage's
// runner touches it).
type verifyRound struct {
	taken map[string]bool // servers read or being read
	swept bool            // a sweep was started: no second one
	vs    []*verification // one a look, each saved when the round ends
	list  *listView       // what the looks' reads learn of the list, shared
}

// verifyCalls returns the reads of one look at the servers waiting for
// verification, leaving out those the round has taken up.
func (h *Handler) verifyCalls(ctx context.Context, log *slog.Logger, rot *Rotation, r *round, vr *verifyRound) ([]stageCall, error) {
	pend, inFlight, err := h.store.Verifying(ctx, rot.ID, rot.Wave, verifyLimit)
	if err != nil {
		return nil, err
	}
	if len(pend) == verifyLimit {
		r.at(r.now)
	}
	pend = slices.DeleteFunc(pend, func(p Pending) bool { return vr.taken[p.ServerID] })
	if len(pend) == 0 {
		return nil, nil
	}
	take := func(ps ...Pending) {
		for _, p := range ps {
			vr.taken[p.ServerID] = true
		}
	}
	groups, loose, alone := neighbours(pend, windowSpan(rot))
	if vr.list == nil {
		vr.list = &listView{drift: rot.drift}
	}
	v := &verification{h: h, log: log, rot: rot, r: r, list: vr.list}
	vr.vs = append(vr.vs, v)
	var calls []stageCall
	for _, ps := range groups {
		if !h.groupReady(rot, ps, inFlight, r) {
			continue
		}
		take(ps...)
		calls = append(calls, stageCall{APIListServers, func(ctx context.Context) (bool, error) { return v.page(ctx, ps) }})
	}
	take(alone...)
	for _, p := range alone {
		calls = append(calls, stageCall{APIShowServer, func(ctx context.Context) (bool, error) { return v.one(ctx, p) }})
	}
	switch {
	case len(loose) == 0, vr.swept:
	case v.sweeping():
		vr.swept = true
		take(loose...)
		calls = append(calls, stageCall{APIListServers, func(ctx context.Context) (bool, error) { return v.sweep(ctx, loose) }})
	default:
		take(loose...)
		for _, p := range loose {
			calls = append(calls, stageCall{APIShowServer, func(ctx context.Context) (bool, error) { return v.one(ctx, p) }})
		}
	}
	return calls, nil
}

// windowSpan is how many places of the plan one read covers: a page, or
// on a list seen moving a page less a little slack, so a window still
// holds its servers when the list moved a few servers more (or less) than
// verification predicted. A page's last servers are then read with the
// next page's first, so a run of pages costs a read a page and a few more.
func windowSpan(rot *Rotation) int {
	// Without the plan's places there are no page counts to wait for the
	// next page by: a page's last servers would cost a read of their own.
	if rot.Positions && rot.drift.Moving() {
		return cph.MaxServersPageSize - 6
	}
	return cph.MaxServersPageSize
}

// neighbours sorts the waiting servers into groups read together, a
// window of the list each: the places [k·span, (k+1)·span) of the plan.
// The windows are fixed, not drawn from whichever servers wait now, so
// pages whose jobs end out of order still make whole windows: a window
// drawn from the first waiting server would leave the last few servers
// of a page that ended late to a read of their own. Servers without a
// place are returned apart (loose), and so are servers UpdateKeypair
// refused (alone): whether such a server still exists decides its
// outcome, and the error budget should not wait for a page to learn it.
func neighbours(pend []Pending, span int) (groups [][]Pending, loose, alone []Pending) {
	var placed []Pending
	for _, p := range pend {
		switch {
		case p.Unknown && p.Code != "":
			alone = append(alone, p)
		case p.Pos < 0:
			loose = append(loose, p)
		default:
			placed = append(placed, p)
		}
	}
	slices.SortStableFunc(placed, func(a, b Pending) int { return cmp.Compare(a.Pos, b.Pos) })
	start := 0
	for i := range placed {
		if placed[i].Pos/span != placed[start].Pos/span {
			groups = append(groups, placed[start:i:i])
			start = i
		}
	}
	if start < len(placed) {
		groups = append(groups, placed[start:])
	}
	return groups, loose, alone
}

// groupReady reports whether a group of waiting servers is read now: once
// no first attempt on the pages its window spans is in flight (retried
// servers are read later, together, once none of them is in flight), once
// they have waited Config.VerifyLinger, or at once in a rotation that
// submits nothing until an operator acts. Otherwise it asks for a round
// then.
func (h *Handler) groupReady(rot *Rotation, ps []Pending, inFlight map[int]InFlight, r *round) bool {
	oldest, first := ps[0].Since, false
	for _, p := range ps {
		if p.Since.Before(oldest) {
			oldest = p.Since
		}
		first = first || p.Attempt <= 1
	}
	if rot.State != StateRunning || r.now.Sub(oldest) >= h.cfg.VerifyLinger {
		return true
	}
	// A window straddles two pages: it is read once the first attempts on
	// both have ended, rather than a read for each part. Its retried
	// servers are left to a read of their own when that read is free.
	ready := true
	span := windowSpan(rot)
	lo := ps[0].Pos / span * span
	last := ps[len(ps)-1].Pos / cph.MaxServersPageSize
	early := first && h.earlyReadsFree(rot)
	for pg := lo / cph.MaxServersPageSize; pg <= (lo+span-1)/cph.MaxServersPageSize; pg++ {
		c := inFlight[pg]
		ready = ready && c.First <= 0 && (early || pg > last || c.Retried <= 0)
	}
	if !ready {
		r.at(oldest.Add(h.cfg.VerifyLinger))
	}
	return ready
}

// earlyReadsFree reports whether a page may be read before its retried
// servers end, and once more after, without lengthening the rotation: the
// reads left, a page holding a retried server counted twice, fit in the
// time the submits left (first attempts and the retries they are expected
// to need) and a retry round (a job, the backoff, a job) take anyway.
// Otherwise a page waits for its retried servers (a retry round, or
// Config.VerifyLinger): each read then verifies a whole page, which is
// what bounds a rotation whose read quota is no larger than its submit
// quota. At the defaults (reads at twice the submit rate) pages are read
// early.
func (h *Handler) earlyReadsFree(rot *Rotation) bool {
	c, chunk := rot.Counts, float64(max(rot.ChunkSize, 1))
	running := c.Running - c.Verifying
	ended := c.Submitted - running
	if c.Retried == 0 || ended <= 0 {
		return true
	}
	fail := min(float64(c.Retried)/float64(ended), 1)
	left := float64(c.Pending + c.Running)
	twice := 1 - math.Pow(1-fail, chunk) // pages holding a retried server
	lim := h.limiterOf(rot)
	reads := left / chunk * (1 + twice) / lim.Rate(APIListServers)
	submits := (float64(c.Pending)+fail*left)/chunk/lim.Rate(APIUpdateKeypair) +
		(2*rot.jobLatency + h.cfg.RetryBase).Seconds()
	return reads <= submits
}

// verification is one round's reads, side by side: what they learn of
// how the list moved is shared, and saved at the end of the round.
type verification struct {
	h   *Handler
	log *slog.Logger
	rot *Rotation
	r   *round

	list  *listView
	mu    sync.Mutex
	swept int // the sweep's next offset (-1: done), once it moved
}

// listView is how the project's list has moved, as a round's reads
// learn it side by side.
type listView struct {
	mu    sync.Mutex
	drift movinglist.Drift
	moved bool
}

// finder is a Finder for the servers around the plan's place pos, where
// the list's drift puts them now.
func (v *verification) finder(pos int) movinglist.Finder {
	v.list.mu.Lock()
	defer v.list.mu.Unlock()
	f := v.list.drift.Finder(pos, v.h.now())
	f.PageSize = cph.MaxServersPageSize
	return f
}

// learnt takes what a read saw of the list: a target it found (nil:
// none), and the list's count.
func (v *verification) learnt(s *movinglist.Sighting, count int) {
	v.list.mu.Lock()
	defer v.list.mu.Unlock()
	v.list.drift, v.list.moved = v.list.drift.Seen(s, count, v.h.now()), true
}

// save records what the round's reads learned of the list.
func (l *listView) save(ctx context.Context, store *Store, id string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.moved {
		return nil
	}
	wctx, cancel := detached(ctx)
	defer cancel()
	return store.SetDrift(wctx, id, l.drift)
}

// save records how far the sweep came.
func (v *verification) save(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	wctx, cancel := detached(ctx)
	defer cancel()
	if v.swept != 0 {
		return v.h.store.SetSweep(wctx, v.rot.ID, max(v.swept, 0), v.swept < 0)
	}
	return nil
}

// readPage reads the window of the list at offset under the read quota.
// A wait is returned as errWait.
func (v *verification) readPage(ctx context.Context, offset int) (*cph.ListServersResponse, error) {
	if err := v.h.limiterOf(v.rot).Wait(ctx, APIListServers); err != nil {
		return nil, &errWait{err}
	}
	var resp *cph.ListServersResponse
	err := v.h.call(ctx, v.rot, APIListServers, func(ctx context.Context) (err error) {
		resp, err = v.h.apiOf(v.rot).ListServersPage(ctx, offset, cph.MaxServersPageSize)
		return err
	})
	return resp, err
}

// errWait is a read that had to wait for the rate limit.
type errWait struct{ err error }

func (e *errWait) Error() string { return e.err.Error() }
func (e *errWait) Unwrap() error { return e.err }

// page reads a page's waiting servers where the list has moved them, and
// reads on their own the few it did not find.
func (v *verification) page(ctx context.Context, ps []Pending) (bool, error) {
	f := v.finder(ps[len(ps)/2].Pos)
	before := f.Shift
	targets := make([]movinglist.Target, len(ps))
	byID := make(map[string]Pending, len(ps))
	for i, p := range ps {
		targets[i] = movinglist.Target{ID: p.ServerID, Pos: p.Pos}
		byID[p.ServerID] = p
	}
	keypairs := map[string]string{}
	places := map[string]int{}
	res, err := f.Locate(ctx, targets, func(ctx context.Context, offset int) ([]string, int, error) {
		resp, err := v.readPage(ctx, offset)
		if err != nil {
			return nil, 0, err
		}
		ids := make([]string, len(resp.Servers))
		for i, s := range resp.Servers {
			ids[i] = s.ServerID
			keypairs[s.ServerID] = s.KeypairName
			places[s.ServerID] = offset + i
		}
		return ids, resp.Count, nil
	})
	v.log.DebugContext(ctx, "page located", "servers", len(ps), "from", targets[0].Pos, "reads", res.Reads,
		"missing", len(res.Missing), "shift_before", before, "shift", f.Shift, "count", f.Count)
	var rs []Resolution
	var sight *movinglist.Sighting
	for _, p := range ps {
		at, ok := res.Found[p.ServerID]
		if !ok {
			continue
		}
		rs = append(rs, v.compare(p, keypairs[p.ServerID]))
		delete(places, p.ServerID)
		if sight == nil || p.Pos <= ps[len(ps)/2].Pos {
			// The found server nearest the middle of the window tells
			// the list's drift there.
			sight = &movinglist.Sighting{Pos: p.Pos, Shift: at - p.Pos}
		}
	}
	if res.Reads > 0 {
		v.learnt(sight, f.Count)
	}
	if err := v.record(ctx, rs); err != nil {
		return true, err
	}
	if lerr := v.learn(ctx, places, f.Shift); lerr != nil {
		return true, lerr
	}
	missing := make([]Pending, len(res.Missing))
	for i, t := range res.Missing {
		missing[i] = byID[t.ID]
	}
	if err != nil {
		if stop, err := v.failed(ctx, APIListServers, err, missing); stop || err != nil {
			return stop, err
		}
		if cph.KindOf(err) != cph.KindPermanent {
			return false, nil
		}
		// Pages cannot be read: read the servers on their own.
	}
	if len(missing) > fewToShow && err == nil {
		// Not where the list's moves say: read on their own, or found by
		// the sweep, next round.
		for _, p := range missing {
			if err := v.h.store.Unplace(ctx, v.rot.ID, p); err != nil {
				return true, err
			}
		}
		v.r.at(v.r.now)
		return false, nil
	}
	for _, p := range missing {
		if stop, err := v.one(ctx, p); stop || err != nil {
			return stop, err
		}
	}
	return false, nil
}

// learn records where the unplaced targets among the servers a read
// showed stand, in the plan's terms (less the list's shift).
func (v *verification) learn(ctx context.Context, places map[string]int, shift int) error {
	if v.rot.unplaced == 0 || len(places) == 0 {
		return nil
	}
	for id, at := range places {
		places[id] = max(at-shift, 0)
	}
	wctx, cancel := detached(ctx)
	defer cancel()
	_, err := v.h.store.Learn(wctx, v.rot.ID, places)
	return err
}

// sweeping reports whether servers the plan did not place are found by
// reading the whole list: when they outnumber its pages (or its size is
// not known yet) or ShowServer refused a read for good, and the sweep has
// not ended.
func (v *verification) sweeping() bool {
	if v.rot.sweepDone {
		return false
	}
	if v.rot.showRefused {
		return true
	}
	count := v.rot.drift.Count
	if count == 0 {
		return v.rot.unplaced > cph.MaxServersPageSize
	}
	return v.rot.unplaced > (count+cph.MaxServersPageSize-1)/cph.MaxServersPageSize
}

// sweep reads the next pages of the list in order: the waiting servers it
// finds are verified, the places of the other unplaced targets learned.
// Servers created while it reads push the list down, so each next offset
// follows the count; once it has read the whole list, the servers it did
// not find are read on their own.
func (v *verification) sweep(ctx context.Context, loose []Pending) (bool, error) {
	byID := make(map[string]Pending, len(loose))
	for _, p := range loose {
		byID[p.ServerID] = p
	}
	f := v.finder(0)
	offset := v.rot.sweepNext
	read := false
	defer func() {
		v.mu.Lock()
		v.swept = offset
		v.mu.Unlock()
		if read {
			// The sweep's places are the plan's less the shift it kept.
			v.learnt(&movinglist.Sighting{Shift: f.Shift}, f.Count)
		}
	}()
	// Once every server waiting is found, the rest of the list is read
	// when the servers on it wait (each page read once).
	width := v.sweepWidth()
	for swept := 0; swept < sweepPerRound && len(byID) > 0; swept += width {
		resps, errs := v.readPages(ctx, offset, min(width, sweepPerRound-swept))
		for i, resp := range resps {
			if errs[i] != nil {
				return v.failed(ctx, APIListServers, errs[i], nil)
			}
			read = true
			end, err := v.sweepPage(ctx, resp, &offset, &f, byID)
			if err != nil {
				return true, err
			}
			if end {
				v.r.at(v.r.now)
				return false, nil
			}
		}
	}
	v.r.at(v.r.now)
	return false, nil
}

// sweepWidth is how many of the sweep's pages are read at once: as many
// as the read rate grants during one read's round trip, so a sweep keeps
// its quota busy at any latency, and one where reads take no time (or
// the rate is not limited), so it reads no page past its last waiting
// server.
func (v *verification) sweepWidth() int {
	n := math.Ceil(v.h.limiterOf(v.rot).Rate(APIListServers) * v.h.lat.of(APIListServers).Seconds())
	if math.IsNaN(n) || math.IsInf(n, 0) || n < 1 {
		return 1
	}
	return min(int(n), sweepPerRound)
}

// readPages reads n pages of the list side by side, from offset on.
func (v *verification) readPages(ctx context.Context, offset, n int) ([]*cph.ListServersResponse, []error) {
	resps, errs := make([]*cph.ListServersResponse, n), make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { resps[i], errs[i] = v.readPage(ctx, offset+i*cph.MaxServersPageSize) })
	}
	wg.Wait()
	return resps, errs
}

// sweepPage takes what a page of the sweep at *offset found: the waiting
// servers on it are verified (and taken out of byID), the places of the
// others learned. It moves *offset to the next page, or at the end of
// the list to -1 (and reports the end).
func (v *verification) sweepPage(ctx context.Context, resp *cph.ListServersResponse, offset *int, f *movinglist.Finder, byID map[string]Pending) (end bool, err error) {
	if f.Count > 0 {
		// Servers created (or deleted) since the last read moved the
		// list: the places learned now are in the plan's terms.
		f.Shift += resp.Count - f.Count
	}
	f.Count = resp.Count
	places := map[string]int{}
	var rs []Resolution
	for i, s := range resp.Servers {
		if p, ok := byID[s.ServerID]; ok {
			rs = append(rs, v.compare(p, s.KeypairName))
			delete(byID, s.ServerID)
			continue
		}
		places[s.ServerID] = *offset + i
	}
	if err := v.record(ctx, rs); err != nil {
		return false, err
	}
	if err := v.learn(ctx, places, f.Shift); err != nil {
		return false, err
	}
	if len(resp.Servers) < cph.MaxServersPageSize || *offset+len(resp.Servers) >= resp.Count {
		*offset = -1
		return true, nil
	}
	*offset += len(resp.Servers)
	return false, nil
}

// one reads one server back with ShowServer.
func (v *verification) one(ctx context.Context, p Pending) (bool, error) {
	if err := v.h.limiterOf(v.rot).Wait(ctx, APIShowServer); err != nil {
		v.r.waited(err)
		return true, nil
	}
	var srv *cph.Server
	err := v.h.call(ctx, v.rot, APIShowServer, func(ctx context.Context) (err error) {
		srv, err = v.h.apiOf(v.rot).ShowServer(ctx, p.ServerID)
		return err
	})
	switch {
	case err == nil:
		return false, v.record(ctx, []Resolution{v.compare(p, srv.KeypairName)})
	case gone(err):
		msg := fmt.Sprintf("the server no longer exists (%s); it was deleted while the rotation ran", err)
		return false, v.record(ctx, []Resolution{verified(p, OutcomeSkipped, CodeServerDeleted, msg)})
	}
	stop, ferr := v.failed(ctx, APIShowServer, err, []Pending{p})
	if ferr == nil && !stop && cph.KindOf(err) == cph.KindPermanent && !v.rot.showRefused {
		// ShowServer cannot be read: servers without a place are found
		// by a sweep of the list instead.
		wctx, cancel := detached(ctx)
		defer cancel()
		ferr = v.h.store.ShowRefused(wctx, v.rot.ID)
	}
	return stop, ferr
}

// gone reports whether a read says the server does not exist: CPH answers
// a server id it does not know with 400 CPS.0016 ("server_id is
// invalid."), and may answer 404.
func gone(err error) bool {
	var e *cph.Error
	if !errors.As(err, &e) {
		return false
	}
	return e.Code == cph.CodeInvalidServer || e.StatusCode == http.StatusNotFound && strings.HasPrefix(e.Code, "CPS.")
}

// failed sorts out a failed verification read of servers ps: a wait, a
// 429, a refusal of the credentials (which halts the rotation) or the
// task's end stops the round's reads; any other failure starts
// (or continues) the servers' deadline, and those past it are recorded
// with CodeVerifyUnavailable. The servers are read again next round.
func (v *verification) failed(ctx context.Context, api string, err error, ps []Pending) (stop bool, _ error) {
	var w *errWait
	switch {
	case errors.As(err, &w):
		v.r.waited(w.err)
		return true, nil
	case ctx.Err() != nil:
		return true, ctx.Err()
	case cph.IsThrottled(err):
		v.r.waited(v.h.throttled(ctx, v.rot, api, err))
		return true, nil
	}
	if halted, herr := v.h.denied(ctx, v.log, v.rot, api, err); halted || herr != nil {
		// The rotation waits for its policy to be fixed; nobody's
		// deadline runs meanwhile.
		return true, herr
	}
	v.log.WarnContext(ctx, "verification read failed; reading again", "api", api, "request_id", requestID(err), "err", err)
	v.r.at(v.r.now.Add(minTick))
	if len(ps) == 0 {
		return false, nil
	}
	ids := make([]string, len(ps))
	for i, p := range ps {
		ids[i] = p.ServerID
	}
	wctx, cancel := detached(ctx)
	defer cancel()
	since, ferr := v.h.store.ReadFailed(wctx, v.rot.ID, ids, v.r.now)
	if ferr != nil {
		return true, ferr
	}
	var rs []Resolution
	for _, p := range ps {
		if t, ok := since[p.ServerID]; ok && v.r.now.Sub(t) >= v.h.cfg.JobTimeout {
			rs = append(rs, verified(p, OutcomeFailed, CodeVerifyUnavailable,
				fmt.Sprintf("the job succeeded but the keypair could not be read back for %s: %s", v.h.cfg.JobTimeout, err)))
		}
	}
	return false, v.record(ctx, rs)
}

// compare resolves a server by the keypair read back. A server whose
// outcome was unknown and is not on the target goes back for another
// attempt (or fails when none is left): it was read, not guessed.
func (v *verification) compare(p Pending, keypair string) Resolution {
	if keypair == p.Keypair {
		return verified(p, OutcomeSucceeded, "", "")
	}
	if p.Unknown && p.Code != "" {
		// Refused, and still there: the refusal is its outcome.
		res := v.h.failure(v.rot, p.entry(), p.JobID, p.Code, p.Message, v.r.now)
		res.member = p.member
		return res
	}
	if p.Unknown {
		res := v.h.failure(v.rot, p.entry(), p.JobID, CodePollUnknown,
			fmt.Sprintf("the job's outcome was not known and keypair_name read back is %q, not %q", keypair, p.Keypair), v.r.now)
		res.member = p.member
		return res
	}
	v.log.Error("job succeeded but the keypair did not change", "server", p.ServerID, "job_id", p.JobID,
		"keypair_name", keypair, "want", p.Keypair)
	return verified(p, OutcomeFailed, CodeVerifyMismatch, fmt.Sprintf("job succeeded but keypair_name is %q, not %q", keypair, p.Keypair))
}

func verified(p Pending, o Outcome, code, msg string) Resolution {
	return Resolution{ServerID: p.ServerID, Outcome: o, JobID: p.JobID, Attempts: p.Attempt, Code: code, Message: msg,
		Entry: p.entry(), member: p.member}
}

// record records verification outcomes, a Resolve per batch.
func (v *verification) record(ctx context.Context, rs []Resolution) error {
	if len(rs) == 0 {
		return nil
	}
	byBatch := map[int][]Resolution{}
	for _, x := range rs {
		n := batchOf(x.member)
		byBatch[n] = append(byBatch[n], x)
	}
	wctx, cancel := detached(ctx)
	defer cancel()
	for n, xs := range byBatch {
		res, err := v.h.store.Resolve(wctx, v.rot.ID, n, v.rot.waveOfBatch(n), xs, time.Time{}, true, v.h.now())
		if err != nil {
			return err
		}
		v.h.countOutcomes(xs, res)
		v.r.resolved(res)
	}
	v.log.DebugContext(ctx, "verified", "servers", len(rs))
	return nil
}
