package cph

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"golang.org/x/time/rate"

	"github.com/cph-rekey/cph-rekey/internal/movinglist"
)

// Paging limits of the list APIs.
const (
	// MaxRequestIDs is how many request ids one ListJobs call may name.
	MaxRequestIDs = 20
	// JobsPageSize is the ListJobs page size the client asks for (the maximum).
	JobsPageSize = 100
	// MaxServersPageSize is the largest ListCloudPhoneServers page.
	MaxServersPageSize = 100
	// maxJobPages stops ListJobs on a server that never sends a short page.
	maxJobPages = 1000
)

// UpdateKeypair asks CPH to change the keypair of servers (PUT
// /v1/{project_id}/cloud-phone/servers/open-access). The change is
// asynchronous: the answer holds one job per accepted server, and a
// ServerJob with Failed() for each server rejected outright. Poll the jobs
// with ListJobs(ctx, resp.RequestID).
func (c *Client) UpdateKeypair(ctx context.Context, servers []ServerKeypair) (*UpdateKeypairResponse, error) {
	const op = "UpdateKeypair"
	if len(servers) == 0 {
		return nil, &Error{Op: op, Kind: KindPermanent, Err: errors.New("no servers given")}
	}
	for i, s := range servers {
		switch {
		case s.ServerID == "":
			return nil, &Error{Op: op, Kind: KindPermanent, Err: fmt.Errorf("servers[%d]: empty server_id", i)}
		case s.KeypairName == "":
			return nil, &Error{Op: op, Kind: KindPermanent, Err: fmt.Errorf("servers[%d] (%s): empty keypair_name", i, s.ServerID)}
		}
	}
	body := struct {
		Servers []ServerKeypair `json:"servers"`
	}{servers}
	var resp UpdateKeypairResponse
	if err := c.do(ctx, op, http.MethodPut, "servers/open-access", nil, body, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// ListJobs returns every job created by the given requests (1 to 20
// request ids, as returned by UpdateKeypair), following pages of 100 until
// a short page: the API reports no total.
func (c *Client) ListJobs(ctx context.Context, requestIDs ...string) ([]Job, error) {
	return c.listJobs(ctx, 0, requestIDs)
}

// ListJobsOf returns the jobs of UpdateKeypair requests (1 to 20 request
// ids) that created expected jobs in all. It stops paging as soon as it
// has seen them all, so requests of exactly one page of jobs cost one
// call, not two (the empty page after a full one); otherwise it pages like
// ListJobs.
func (c *Client) ListJobsOf(ctx context.Context, expected int, requestIDs ...string) ([]Job, error) {
	return c.listJobs(ctx, expected, requestIDs)
}

// listJobs lists the jobs of requestIDs, stopping at a short page or, when
// expected > 0, once that many distinct jobs are listed.
func (c *Client) listJobs(ctx context.Context, expected int, requestIDs []string) ([]Job, error) {
	const op = "ListJobs"
	if len(requestIDs) == 0 || len(requestIDs) > MaxRequestIDs {
		return nil, &Error{Op: op, Kind: KindPermanent,
			Err: fmt.Errorf("%d request ids given, want 1 to %d", len(requestIDs), MaxRequestIDs)}
	}
	for i, id := range requestIDs {
		if err := checkID(fmt.Sprintf("request id %d", i), id); err != nil {
			return nil, &Error{Op: op, Kind: KindPermanent, Err: err}
		}
	}
	q := url.Values{"limit": {strconv.Itoa(JobsPageSize)}}
	if len(requestIDs) == 1 {
		q.Set("request_id", requestIDs[0])
	} else {
		q.Set("request_ids", strings.Join(requestIDs, ","))
	}
	var jobs []Job
	seen := make(map[string]bool)
	for page := 0; ; page++ {
		if page == maxJobPages {
			return nil, &Error{Op: op, Kind: KindTransient,
				Err: fmt.Errorf("more than %d pages of jobs: the API ignores offset", maxJobPages)}
		}
		q.Set("offset", strconv.Itoa(page*JobsPageSize))
		var resp ListJobsResponse
		if err := c.do(ctx, op, http.MethodGet, "jobs", q, nil, &resp); err != nil {
			return nil, err
		}
		fresh := 0
		for _, j := range resp.Jobs {
			if !seen[j.JobID] {
				seen[j.JobID] = true
				fresh++
			}
		}
		jobs = append(jobs, resp.Jobs...)
		if len(resp.Jobs) < JobsPageSize || expected > 0 && len(seen) >= expected {
			return jobs, nil
		}
		if fresh == 0 {
			return nil, &Error{Op: op, Kind: KindTransient, RequestID: resp.RequestID,
				Err: fmt.Errorf("page at offset %d repeats jobs already listed: the API ignores offset", page*JobsPageSize)}
		}
	}
}

// ShowJob returns one job (GET /v1/{project_id}/cloud-phone/jobs/{job_id}).
// An unknown job is a permanent error with Code CodeJobNotFound.
func (c *Client) ShowJob(ctx context.Context, jobID string) (*Job, error) {
	const op = "ShowJob"
	if err := checkID("job id", jobID); err != nil {
		return nil, &Error{Op: op, Kind: KindPermanent, Err: err}
	}
	var job Job
	if err := c.do(ctx, op, http.MethodGet, "jobs/"+jobID, nil, nil, &job); err != nil {
		return nil, err
	}
	return &job, nil
}

// ServerFilter selects the servers ListServers lists. Zero fields do not
// filter. PageSize and Progress say how to list, not what.
type ServerFilter struct {
	// ServerName matches server names fuzzily (as CPH does).
	ServerName string
	// ServerID, NetworkVersion ("v1"/"v2") and PhoneModelName match exactly.
	ServerID, NetworkVersion, PhoneModelName string
	// Status, when not nil, selects one server status (e.g. ServerStatusNormal).
	Status *int
	// CreateSince and CreateUntil bound the creation time (Unix timestamps,
	// as CPH takes them).
	CreateSince, CreateUntil int64
	// PageSize is the number of servers asked for per call, 2 to 100.
	// Zero: 100.
	PageSize int
	// Progress, when set, is called after each page ListServers takes,
	// from the goroutine that called ListServers.
	Progress func(ListProgress)
}

// ListProgress is how far a ListServers walk is.
type ListProgress struct {
	// Pages counts the pages read so far; TotalPages is what the whole list
	// takes as far as its latest count tells (it grows with the list and
	// with re-reads, and equals Pages once the walk is done).
	Pages, TotalPages int
	// ReReads counts the pages read again because the list moved between
	// two reads more than their overlap.
	ReReads int
	// Servers counts the servers listed so far, each once; Count is the
	// list's count in the latest answer.
	Servers, Count int
	// Throttled counts the answers 429 (each read again after its
	// Retry-After); Retries counts every read tried again, throttled or
	// failed transiently.
	Throttled, Retries int
	// InFlight is how many reads the walk keeps in flight now.
	InFlight int
}

// ListServers lists the servers matching f (GET
// /v1/{project_id}/cloud-phone/servers), calling fn with each server once,
// in list order, a page at a time, so memory stays bounded however large
// the fleet. It returns fn's error as soon as fn fails.
//
// Once the first page gives the list's count, the other pages are read
// several at once: as many as the client's ReadRate and the round trip
// observed need to keep the read rate busy (rate × latency, at most
// movinglist.MaxInFlight), all paced by ReadRate. Pages are offsets into a
// list sorted by creation time, newest first, not a snapshot: servers
// created while it is read push the pages not read yet down, servers
// deleted pull them up. So pages overlap, each is taken only once it
// shares a server with the pages taken before it, and a page that shares
// none is bridged by a read where the list moved (movinglist.Sweep). The
// servers fn gets, counted in order, are places in one list, the list as
// the walk saw it; a server deleted while the list is read is listed if a
// read saw it.
func (c *Client) ListServers(ctx context.Context, f ServerFilter, fn func(page []Server) error) error {
	const op = "ListCloudPhoneServers"
	size := f.PageSize
	if size == 0 {
		size = MaxServersPageSize
	}
	if size < 2 || size > MaxServersPageSize {
		return &Error{Op: op, Kind: KindPermanent, Err: fmt.Errorf("PageSize %d is not in 2..%d", f.PageSize, MaxServersPageSize)}
	}
	q := url.Values{"limit": {strconv.Itoa(size)}}
	for name, v := range map[string]string{
		"server_name": f.ServerName, "server_id": f.ServerID,
		"network_version": f.NetworkVersion, "phone_model_name": f.PhoneModelName,
	} {
		if v != "" {
			q.Set(name, v)
		}
	}
	if f.Status != nil {
		q.Set("status", strconv.Itoa(*f.Status))
	}
	if f.CreateSince != 0 {
		q.Set("create_since", strconv.FormatInt(f.CreateSince, 10))
	}
	if f.CreateUntil != 0 {
		q.Set("create_until", strconv.FormatInt(f.CreateUntil, 10))
	}
	obs := &observer{}
	sw := movinglist.Sweep[Server]{
		Read: func(ctx context.Context, offset int) (movinglist.Window[Server], error) {
			q := maps.Clone(q)
			q.Set("offset", strconv.Itoa(offset))
			var resp ListServersResponse
			if err := c.call(ctx, op, http.MethodGet, c.phonePath("servers"), q, nil, &resp, obs); err != nil {
				return movinglist.Window[Server]{}, err
			}
			return movinglist.Window[Server]{Items: resp.Servers, Count: resp.Count}, nil
		},
		ID:       func(s Server) string { return s.ServerID },
		PageSize: size,
		InFlight: func() int { return c.readsInFlight(obs) },
	}
	if f.Progress != nil {
		sw.Progress = func(p movinglist.Progress) {
			f.Progress(ListProgress{Pages: p.Reads, TotalPages: p.Pages, ReReads: p.ReReads, Servers: p.Items, Count: p.Count,
				Throttled: int(obs.throttled.Load()), Retries: int(obs.retries.Load()),
				InFlight: min(movinglist.MaxInFlight, c.readsInFlight(obs))})
		}
	}
	err := sw.Run(ctx, fn)
	if errors.Is(err, movinglist.ErrLost) {
		return &Error{Op: op, Kind: KindTransient, Err: err}
	}
	return err
}

// readsInFlight is how many reads keep the read rate busy at the round
// trip observed so far: rate × latency, with a quarter to spare for the
// latency's spread, and one more. Unpaced reads, or no round trip seen
// yet: as many as a walk allows.
func (c *Client) readsInFlight(obs *observer) int {
	rtt := time.Duration(obs.rtt.Load())
	if c.reads == nil || c.reads.Limit() == rate.Inf || rtt <= 0 {
		return movinglist.MaxInFlight
	}
	return int(math.Ceil(float64(c.reads.Limit())*rtt.Seconds()*1.25)) + 1
}

// ListServersPage returns one page of every server of the project (GET
// /v1/{project_id}/cloud-phone/servers?offset=&limit=), unfiltered, in the
// API's order (newest first). Verification reads the pages that hold the
// servers it checks: one call for up to 100 servers.
func (c *Client) ListServersPage(ctx context.Context, offset, limit int) (*ListServersResponse, error) {
	const op = "ListCloudPhoneServers"
	if offset < 0 || limit < 1 || limit > MaxServersPageSize {
		return nil, &Error{Op: op, Kind: KindPermanent, Err: fmt.Errorf("offset %d, limit %d: want offset ≥ 0 and limit 1..%d", offset, limit, MaxServersPageSize)}
	}
	q := url.Values{"offset": {strconv.Itoa(offset)}, "limit": {strconv.Itoa(limit)}}
	var resp ListServersResponse
	if err := c.do(ctx, op, http.MethodGet, "servers", q, nil, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// ShowServer returns one server's details (GET
// /v1/{project_id}/cloud-phone/servers/{server_id}), e.g. to verify that a
// keypair change took effect.
func (c *Client) ShowServer(ctx context.Context, serverID string) (*Server, error) {
	const op = "ShowCloudPhoneServerDetail"
	if err := checkID("server id", serverID); err != nil {
		return nil, &Error{Op: op, Kind: KindPermanent, Err: err}
	}
	var s Server
	if err := c.do(ctx, op, http.MethodGet, "servers/"+serverID, nil, nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}
