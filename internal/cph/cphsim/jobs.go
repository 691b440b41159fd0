package cphsim

import (
	"container/heap"
	"encoding/json"
	"net/http"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// outcome is how a job will end, drawn when it is created.
type outcome uint8

const (
	outSucceed outcome = iota
	outTransient
	outAbnormal
	outNoKeypair
	outDeleted
)

// job is one UpdateKeypair job. It holds no goroutine and no timer: it is
// running until the clock passes due, and settle applies its outcome then.
type job struct {
	id      string
	begin   int64 // unix nanoseconds
	due     int64 // unix nanoseconds
	server  int32
	keypair uint32
	outcome outcome
	done    bool
}

func (j *job) status() cph.JobStatus {
	switch {
	case !j.done:
		return cph.JobRunning
	case j.outcome == outSucceed:
		return cph.JobSucceeded
	}
	return cph.JobFailed
}

func (j *job) errorCode() (code, msg string) {
	if !j.done {
		return "", ""
	}
	switch j.outcome {
	case outTransient:
		return JobCodeTransient, "Job execution timed out, please try again."
	case outAbnormal:
		return JobCodeServerAbnormal, "Server status is abnormal."
	case outNoKeypair:
		return JobCodeKeypairNotFound, "Keypair does not exist."
	case outDeleted:
		return JobCodeServerDeleted, "server has been deleted"
	}
	return "", ""
}

// jobs holds every job ever created, the jobs of each request in creation
// order, and the running ones in a heap by due time.
type jobs struct {
	all       []job
	byID      map[string]int32
	byRequest map[string][]int32
	running   dueHeap
}

func newJobs() jobs {
	return jobs{byID: map[string]int32{}, byRequest: map[string][]int32{}}
}

type dueEntry struct {
	due int64
	job int32
}

// dueHeap orders running jobs by due time, then creation order.
type dueHeap []dueEntry

func (h dueHeap) Len() int { return len(h) }
func (h dueHeap) Less(i, j int) bool {
	return h[i].due < h[j].due || h[i].due == h[j].due && h[i].job < h[j].job
}
func (h dueHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)   { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// endJob ends the running job due first (see settle). A job whose server
// was deleted while it ran fails with JobCodeServerDeleted, whatever its
// drawn outcome. s.mu must be held.
func (s *Sim) endJob() {
	e := heap.Pop(&s.jobs.running).(dueEntry)
	j := &s.jobs.all[e.job]
	j.done = true
	if s.fleet.state[j.server].deleted {
		j.outcome = outDeleted
	}
	if j.outcome != outSucceed {
		s.stats.jobsFailed++
		return
	}
	s.stats.jobsSucceeded++
	if !s.opts.LieOnSuccess {
		srv := &s.fleet.state[j.server]
		srv.keypair, srv.updated = j.keypair, time.Unix(0, j.due).Unix()
	}
}

type updateKeypairBody struct {
	RequestID string          `json:"request_id"`
	Jobs      []serverJobWire `json:"jobs"`
}

// serverJobWire leaves out job_id on a rejected server and error_* on a
// created job, as the SDK's omitempty model does.
type serverJobWire struct {
	ServerID  string `json:"server_id"`
	JobID     string `json:"job_id,omitempty"`
	ErrorCode string `json:"error_code,omitempty"`
	ErrorMsg  string `json:"error_msg,omitempty"`
}

// updateKeypair validates the whole body first (any bad entry fails the
// request with 400 and creates nothing), then answers each server: unknown,
// deleted or rejected servers with a CPS.0016 entry and no job, the others
// with a running job whose outcome is drawn now.
func (s *Sim) updateKeypair(r *request) (any, *apiError) {
	var in struct {
		Servers []cph.ServerKeypair `json:"servers"`
	}
	if err := json.Unmarshal(r.body, &in); err != nil {
		return nil, errorf(http.StatusBadRequest, "CPS.0003", "Parameter: request body is invalid: %v", err)
	}
	if len(in.Servers) == 0 {
		return nil, errorf(http.StatusBadRequest, "CPS.0003", "Parameter: servers is empty.")
	}
	for i, sk := range in.Servers {
		if sk.ServerID == "" || len(sk.ServerID) > maxServerID {
			return nil, errorf(http.StatusBadRequest, "CPS.0016", "server_id is invalid.")
		}
		if sk.KeypairName == "" || len(sk.KeypairName) > maxKeypair {
			return nil, errorf(http.StatusBadRequest, "CPS.0003", "Parameter: servers[%d].keypair_name is invalid.", i)
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(r.at)
	out := updateKeypairBody{RequestID: r.id, Jobs: make([]serverJobWire, 0, len(in.Servers))}
	ids := make([]int32, 0, len(in.Servers))
	for _, sk := range in.Servers {
		i, ok := s.fleet.byID[sk.ServerID]
		if ok {
			s.fleet.state[i].submits++
		}
		if !ok || s.fleet.state[i].deleted || s.fleet.state[i].bad == badRejected {
			s.stats.serversRejected++
			out.Jobs = append(out.Jobs, serverJobWire{ServerID: sk.ServerID, ErrorCode: "CPS.0016", ErrorMsg: "server_id is invalid."})
			continue
		}
		ji := s.createJob(i, r.project, sk.KeypairName, r.at)
		ids = append(ids, ji)
		out.Jobs = append(out.Jobs, serverJobWire{ServerID: sk.ServerID, JobID: s.jobs.all[ji].id})
	}
	s.jobs.byRequest[r.id] = ids
	return out, nil
}

// createJob starts a job setting server i of project to keypair, which
// fails unless KPS holds the keypair in that project. s.mu must be held.
func (s *Sim) createJob(i int32, project, keypair string, at time.Time) int32 {
	j := job{server: i, keypair: s.fleet.intern(keypair), begin: at.UnixNano()}
	switch {
	case s.fleet.state[i].status != cph.ServerStatusNormal:
		j.outcome = outAbnormal
	case !s.kps.exists(project, keypair):
		j.outcome = outNoKeypair
	case s.rng.Float64() < s.opts.JobFailRate:
		j.outcome = outTransient
	}
	latency := s.opts.JobLatency
	if jit := s.opts.JobJitter; jit > 0 {
		latency += time.Duration(s.rng.Int64N(2*int64(jit)+1)) - jit
	}
	j.due = j.begin + int64(max(latency, 0))
	j.id = newID(s.rng)
	for _, dup := s.jobs.byID[j.id]; dup; _, dup = s.jobs.byID[j.id] {
		j.id = newID(s.rng)
	}
	ji := int32(len(s.jobs.all))
	s.jobs.all = append(s.jobs.all, j)
	s.jobs.byID[j.id] = ji
	heap.Push(&s.jobs.running, dueEntry{due: j.due, job: ji})
	s.stats.jobsCreated++
	return ji
}

// showJobBody is ShowJob's answer: unset strings are null, as documented.
type showJobBody struct {
	RequestID  string  `json:"request_id"`
	JobID      string  `json:"job_id"`
	Status     int     `json:"status"`
	BeginTime  *string `json:"begin_time"`
	EndTime    *string `json:"end_time"`
	PhoneID    *string `json:"phone_id"`
	ServerID   *string `json:"server_id"`
	ErrorCode  *string `json:"error_code"`
	ErrorMsg   *string `json:"error_msg"`
	ExecuteMsg *string `json:"execute_msg"`
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func (s *Sim) showJob(r *request) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(r.at)
	ji, ok := s.jobs.byID[r.param]
	if !ok {
		return nil, errorf(http.StatusNotFound, "CPS.0011", "Job not found.")
	}
	j := &s.jobs.all[ji]
	w := s.jobWire(j)
	return showJobBody{
		RequestID: r.id, JobID: j.id, Status: w.Status,
		BeginTime: nullable(w.BeginTime), EndTime: nullable(w.EndTime), ServerID: nullable(w.ServerID),
		ErrorCode: nullable(w.ErrorCode), ErrorMsg: nullable(w.ErrorMsg),
	}, nil
}

// jobWire is a job as ListJobs shows it: unset strings are "", as
// documented; node_id is the server id (deprecated alias).
type jobWire struct {
	PhoneID    string `json:"phone_id"`
	ServerID   string `json:"server_id"`
	NodeID     string `json:"node_id"`
	JobID      string `json:"job_id"`
	BeginTime  string `json:"begin_time"`
	EndTime    string `json:"end_time"`
	Status     int    `json:"status"`
	ErrorCode  string `json:"error_code"`
	ErrorMsg   string `json:"error_msg"`
	ExecuteMsg string `json:"execute_msg"`
}

func (s *Sim) jobWire(j *job) jobWire {
	w := jobWire{
		ServerID:  s.fleet.ids[j.server],
		NodeID:    s.fleet.ids[j.server],
		JobID:     j.id,
		BeginTime: formatTime(j.begin),
		Status:    int(j.status()),
	}
	if j.done {
		w.EndTime = formatTime(j.due)
	}
	w.ErrorCode, w.ErrorMsg = j.errorCode()
	return w
}

type listJobsBody struct {
	RequestID string    `json:"request_id"`
	Jobs      []jobWire `json:"jobs"`
}

// maxRequestIDs is ListJobs' documented cap on request_ids.
const maxRequestIDs = 20

// listJobs is ListJobs: the jobs of request_ids (comma separated, at most
// 20, winning over request_id) or of request_id, each request's jobs in
// submission order and requests in the order given, paged by
// offset/limit. Unknown request ids contribute nothing.
func (s *Sim) listJobs(r *request) (any, *apiError) {
	var reqs []string
	if v := first(r.query, "request_ids"); v != "" {
		seen := map[string]bool{}
		for _, id := range strings.Split(v, ",") {
			if id = strings.TrimSpace(id); id != "" && !seen[id] {
				seen[id] = true
				reqs = append(reqs, id)
			}
		}
		if len(reqs) > maxRequestIDs {
			return nil, errorf(http.StatusBadRequest, "CPS.0003", "Parameter: request_ids has %d ids, more than %d.", len(reqs), maxRequestIDs)
		}
	}
	if len(reqs) == 0 {
		if id := first(r.query, "request_id"); id != "" {
			reqs = []string{id}
		}
	}
	if len(reqs) == 0 {
		return nil, errorf(http.StatusBadRequest, "CPS.0003", "Parameter: request_id or request_ids is required.")
	}
	offset, limit, e := paging(r.query)
	if e != nil {
		return nil, e
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(r.at)
	out := listJobsBody{RequestID: r.id, Jobs: []jobWire{}}
	pos := 0
	for _, id := range reqs {
		idx := s.jobs.byRequest[id]
		if pos+len(idx) <= offset {
			pos += len(idx)
			continue
		}
		for _, ji := range idx {
			if pos >= offset && len(out.Jobs) < limit {
				out.Jobs = append(out.Jobs, s.jobWire(&s.jobs.all[ji]))
			}
			pos++
		}
		if len(out.Jobs) == limit {
			break
		}
	}
	return out, nil
}
