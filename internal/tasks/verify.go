package tasks

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// verifyLimit bounds the servers one tick looks at for verification.
const verifyLimit = 20000

// verify reads back the keypair of servers whose job succeeded, by the
// cheapest reads there are: the page of the project's server list that the
// plan saw a server on (ListCloudPhoneServers, 100 servers a call) when two
// or more servers wait on it, ShowServer when one does or its place is not
// known. A page is read once no target on it is still in flight (so each
// page is read once, retries included), or once its servers have waited
// Config.Linger. A server a page no longer holds (the list shifted) is read
// on its own. A server on another keypair fails with CodeVerifyMismatch,
// permanently: the job claimed a change that did not happen, and
// submitting again would only repeat the claim. A read that must wait
// leaves its servers for the next tick; nothing is polled again.
func (h *Handler) verify(ctx context.Context, log *slog.Logger, rot *Rotation, r *round) error {
	pend, inFlight, err := h.store.Verifying(ctx, rot.ID, rot.Wave, verifyLimit)
	if err != nil || len(pend) == 0 {
		return err
	}
	if len(pend) == verifyLimit {
		r.at(r.now)
	}
	pages := map[int][]Pending{}
	var single []Pending
	var expired []Resolution
	for _, p := range pend {
		switch {
		case r.now.Sub(p.Since) > h.cfg.JobTimeout:
			expired = append(expired, verified(p, OutcomeFailed, CodeVerifyFailed,
				fmt.Sprintf("keypair not read back within %s of the job's success", h.cfg.JobTimeout)))
		case p.Pos < 0:
			single = append(single, p)
		default:
			pages[p.Pos/cph.MaxServersPageSize] = append(pages[p.Pos/cph.MaxServersPageSize], p)
		}
	}
	if err := h.recordVerified(ctx, log, rot, expired, r); err != nil {
		return err
	}
	var reads []int
	for _, pg := range slices.Sorted(maps.Keys(pages)) {
		ps := pages[pg]
		oldest := ps[0].Since
		for _, p := range ps[1:] {
			if p.Since.Before(oldest) {
				oldest = p.Since
			}
		}
		// A paused or halted rotation submits nothing until an operator
		// acts: what it has is read now rather than held for servers
		// that will not come.
		if inFlight[pg] > 0 && rot.State == StateRunning && r.now.Sub(oldest) < h.cfg.VerifyLinger {
			r.at(oldest.Add(h.cfg.VerifyLinger))
			continue
		}
		if len(ps) == 1 {
			single = append(single, ps[0])
			continue
		}
		reads = append(reads, pg)
	}
	type read struct {
		page int
		p    Pending // when page < 0
	}
	calls := make([]read, 0, len(reads)+len(single))
	for _, pg := range reads {
		calls = append(calls, read{page: pg})
	}
	for _, p := range single {
		calls = append(calls, read{page: -1, p: p})
	}
	return each(ctx, calls, func(ctx context.Context, c read) (bool, error) {
		if c.page < 0 {
			return h.verifyOne(ctx, log, rot, c.p, r)
		}
		return h.verifyPage(ctx, log, rot, c.page, pages[c.page], r)
	})
}

// verifyPage reads one page of the project's server list and checks the
// servers waiting on it.
func (h *Handler) verifyPage(ctx context.Context, log *slog.Logger, rot *Rotation, page int, ps []Pending, r *round) (bool, error) {
	if err := h.limiter.Wait(ctx, APIListServers); err != nil {
		r.waited(err)
		return true, nil
	}
	var resp *cph.ListServersResponse
	err := h.call(ctx, APIListServers, func(ctx context.Context) (err error) {
		resp, err = h.api.ListServersPage(ctx, page*cph.MaxServersPageSize, cph.MaxServersPageSize)
		return err
	})
	if stop, err := h.readFailed(ctx, log, APIListServers, err, r); err != nil || stop {
		return stop, err
	}
	if resp == nil {
		return false, nil // failed transiently: read again next tick
	}
	have := make(map[string]string, len(resp.Servers))
	for _, s := range resp.Servers {
		have[s.ServerID] = s.KeypairName
	}
	var rs []Resolution
	for _, p := range ps {
		kp, ok := have[p.ServerID]
		if !ok {
			// The list shifted (servers created or deleted): read it alone.
			if err := h.store.Unplace(ctx, rot.ID, p); err != nil {
				return true, err
			}
			r.at(r.now)
			continue
		}
		rs = append(rs, h.compare(log, p, kp))
	}
	return false, h.recordVerified(ctx, log, rot, rs, r)
}

// verifyOne reads one server back with ShowServer.
func (h *Handler) verifyOne(ctx context.Context, log *slog.Logger, rot *Rotation, p Pending, r *round) (bool, error) {
	if err := h.limiter.Wait(ctx, APIShowServer); err != nil {
		r.waited(err)
		return true, nil
	}
	var srv *cph.Server
	err := h.call(ctx, APIShowServer, func(ctx context.Context) (err error) {
		srv, err = h.api.ShowServer(ctx, p.ServerID)
		return err
	})
	if err != nil && cph.KindOf(err) == cph.KindPermanent && !cph.IsThrottled(err) && ctx.Err() == nil {
		rs := []Resolution{verified(p, OutcomeFailed, CodeVerifyFailed, "read-back after the job succeeded: "+err.Error())}
		return false, h.recordVerified(ctx, log, rot, rs, r)
	}
	if stop, err := h.readFailed(ctx, log, APIShowServer, err, r); err != nil || stop {
		return stop, err
	}
	if srv == nil {
		return false, nil
	}
	return false, h.recordVerified(ctx, log, rot, []Resolution{h.compare(log, p, srv.KeypairName)}, r)
}

// readFailed sorts out a failed verification read: a 429 or the task's end
// stops the tick's reads; any other failure is read again next tick (the
// job timeout bounds how long).
func (h *Handler) readFailed(ctx context.Context, log *slog.Logger, api string, err error, r *round) (stop bool, _ error) {
	switch {
	case err == nil:
		return false, nil
	case ctx.Err() != nil:
		return true, ctx.Err()
	case cph.IsThrottled(err):
		r.waited(h.throttled(ctx, api, err))
		return true, nil
	}
	log.WarnContext(ctx, "verification read failed; reading again", "api", api, "request_id", requestID(err), "err", err)
	r.at(r.now.Add(minTick))
	return false, nil
}

// compare resolves a server by the keypair read back.
func (h *Handler) compare(log *slog.Logger, p Pending, keypair string) Resolution {
	if keypair == p.Keypair {
		return verified(p, OutcomeSucceeded, "", "")
	}
	log.Error("job succeeded but the keypair did not change", "server", p.ServerID, "job_id", p.JobID,
		"keypair_name", keypair, "want", p.Keypair)
	return verified(p, OutcomeFailed, CodeVerifyMismatch, fmt.Sprintf("job succeeded but keypair_name is %q, not %q", keypair, p.Keypair))
}

func verified(p Pending, o Outcome, code, msg string) Resolution {
	return Resolution{ServerID: p.ServerID, Outcome: o, JobID: p.JobID, Attempts: p.Attempt, Code: code, Message: msg,
		Entry: Entry{ServerID: p.ServerID, Keypair: p.Keypair, Attempt: p.Attempt, Pos: p.Pos}, member: p.member}
}

// recordVerified records verification outcomes, a Resolve per batch.
func (h *Handler) recordVerified(ctx context.Context, log *slog.Logger, rot *Rotation, rs []Resolution, r *round) error {
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
		res, err := h.store.Resolve(wctx, rot.ID, n, rot.waveOfBatch(n), xs, time.Time{}, true, h.now())
		if err != nil {
			return err
		}
		h.countOutcomes(xs, res)
		r.resolved(res)
	}
	log.DebugContext(ctx, "verified", "servers", len(rs))
	return nil
}
