package cphsim

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// Stats counts what the simulator has seen and done. Maps have an entry
// for every API in APIs.
type Stats struct {
	// Calls counts every request routed to an API, whatever its answer
	// (unauthenticated, throttled and faulted ones included), so a test can
	// prove that a dry run made no write call.
	Calls map[API]int `json:"calls"`
	// Throttled counts 429 answers.
	Throttled map[API]int `json:"throttled"`
	// Injected5xx counts injected 500/503/504 answers.
	Injected5xx map[API]int `json:"injected_5xx"`
	// Dropped counts connections closed without an answer.
	Dropped map[API]int `json:"dropped"`
	// Slowed counts answers delayed by Options.SlowDelay.
	Slowed map[API]int `json:"slowed"`
	// Unauthorized and Forbidden count 401 and 403 answers.
	Unauthorized int `json:"unauthorized"`
	Forbidden    int `json:"forbidden"`
	// ServersRejected counts per-server CPS.0016 entries in UpdateKeypair
	// answers (unknown, deleted or BadRejected servers).
	ServersRejected int `json:"servers_rejected"`
	// ServersCreated and ServersDeleted count churn (Options.CreateRate,
	// Options.DeleteRate) by now.
	ServersCreated int `json:"servers_created"`
	ServersDeleted int `json:"servers_deleted"`
	// Jobs created, still running, and ended by now.
	JobsCreated   int `json:"jobs_created"`
	JobsRunning   int `json:"jobs_running"`
	JobsSucceeded int `json:"jobs_succeeded"`
	JobsFailed    int `json:"jobs_failed"`
}

// Writes is the number of calls that could change something.
func (st Stats) Writes() int {
	n := 0
	for api, c := range st.Calls {
		if api.Write() {
			n += c
		}
	}
	return n
}

// counters is the live form of Stats, guarded by Sim.mu.
type counters struct {
	calls, throttled, injected5xx, dropped, slowed map[API]int
	unauthorized, forbidden, serversRejected       int
	serversCreated, serversDeleted                 int
	jobsCreated, jobsSucceeded, jobsFailed         int
}

func newCounters() counters {
	return counters{calls: map[API]int{}, throttled: map[API]int{}, injected5xx: map[API]int{},
		dropped: map[API]int{}, slowed: map[API]int{}}
}

func perAPI(m map[API]int) map[API]int {
	out := make(map[API]int, len(APIs()))
	for _, a := range APIs() {
		out[a] = m[a]
	}
	return out
}

// Stats returns the counters as of now (jobs due by now have ended).
func (s *Sim) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(s.now())
	c := &s.stats
	return Stats{
		Calls: perAPI(c.calls), Throttled: perAPI(c.throttled), Injected5xx: perAPI(c.injected5xx),
		Dropped: perAPI(c.dropped), Slowed: perAPI(c.slowed),
		Unauthorized: c.unauthorized, Forbidden: c.forbidden, ServersRejected: c.serversRejected,
		ServersCreated: c.serversCreated, ServersDeleted: c.serversDeleted,
		JobsCreated: c.jobsCreated, JobsRunning: s.jobs.running.Len(),
		JobsSucceeded: c.jobsSucceeded, JobsFailed: c.jobsFailed,
	}
}

// Keypair returns the keypair serverID is on now, and whether the server
// exists. A server churn deleted keeps the keypair it was last on, so a
// test can still tell where a rotation left it (see Deleted).
func (s *Sim) Keypair(serverID string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(s.now())
	i, ok := s.fleet.byID[serverID]
	if !ok {
		return "", false
	}
	return s.fleet.keypairs[s.fleet.state[i].keypair], true
}

// SubmitCount returns how many times UpdateKeypair named serverID in a
// valid request, after its deletion included (0 for a server that never
// existed).
func (s *Sim) SubmitCount(serverID string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, ok := s.fleet.byID[serverID]
	if !ok {
		return 0
	}
	return int(s.fleet.state[i].submits)
}

// Servers returns every live server as ListServers shows it now, newest
// first.
func (s *Sim) Servers() []cph.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(s.now())
	out := make([]cph.Server, s.fleet.len())
	for pos := range out {
		out[pos] = s.fleet.server(s.fleet.at(pos))
	}
	return out
}

// BadServer is a server that fails every time, and the code it fails with.
type BadServer struct {
	ServerID  string `json:"server_id"`
	ErrorCode string `json:"error_code"`
	// InJob is true when the failure comes in the job (JobCodeServerAbnormal)
	// and false when UpdateKeypair rejects the server at once (CPS.0016).
	InJob bool `json:"in_job"`
}

// BadServers lists the servers that always fail, in list order.
func (s *Sim) BadServers() []BadServer {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []BadServer
	for pos := range s.fleet.len() {
		i := s.fleet.at(pos)
		if bad := s.fleet.state[i].bad; bad != notBad {
			out = append(out, BadServer{ServerID: s.fleet.ids[i], ErrorCode: bad.code(), InJob: bad == badAbnormal})
		}
	}
	return out
}

// ServerState is one server's entry in GET /_sim/servers.
type ServerState struct {
	ServerID    string `json:"server_id"`
	KeypairName string `json:"keypair_name"`
	Status      int    `json:"status"`
	Submits     int    `json:"submits"`
	BadCode     string `json:"bad_code,omitempty"`
	// Deleted is set only when a deleted server is asked for by server_id.
	Deleted bool `json:"deleted,omitempty"`
}

type simServersBody struct {
	Count   int           `json:"count"`
	Servers []ServerState `json:"servers"`
}

// serveSim serves the unauthenticated test aids:
//
//	GET /_sim/stats                               Stats
//	GET /_sim/servers[?server_id=&offset=&limit=] {"count":N,"servers":[ServerState…]} (no limit: all live ones)
//	GET /_sim/deleted                             {"count":N,"server_ids":[…]} (DeletedServers)
//	PUT /_sim/quota?api=UpdateKeypair&rate=5      SetQuota, answers the new Stats
//	POST /_sim/churn?create=5&delete=1            SetChurn (a rate left out is 0), answers the new Stats
//	POST /_sim/deny?api=ListJobs&denied=true      SetDeny, answers the new Stats
//
// The setters take PUT as well as POST, so that none depends on which.
func (s *Sim) serveSim(w http.ResponseWriter, r *http.Request, reqID string) {
	set := r.Method == http.MethodPut || r.Method == http.MethodPost
	q := r.URL.Query()
	var err error
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/_sim/stats":
		writeJSON(w, http.StatusOK, s.Stats())
		return
	case r.Method == http.MethodGet && r.URL.Path == "/_sim/servers":
		s.serveSimServers(w, r, reqID)
		return
	case r.Method == http.MethodGet && r.URL.Path == "/_sim/deleted":
		ids := s.DeletedServers()
		writeJSON(w, http.StatusOK, simDeletedBody{Count: len(ids), ServerIDs: ids})
		return
	case set && r.URL.Path == "/_sim/quota":
		var v float64
		if v, err = parseFloat(q, "rate", false); err == nil {
			err = s.SetQuota(API(q.Get("api")), v)
		}
	case set && r.URL.Path == "/_sim/churn":
		var c, d float64
		if c, err = parseFloat(q, "create", true); err == nil {
			if d, err = parseFloat(q, "delete", true); err == nil {
				err = s.SetChurn(c, d)
			}
		}
	case set && r.URL.Path == "/_sim/deny":
		var denied bool
		if denied, err = strconv.ParseBool(q.Get("denied")); err != nil {
			err = fmt.Errorf("denied %q is not true or false", q.Get("denied"))
		} else {
			err = s.SetDeny(API(q.Get("api")), denied)
		}
	default:
		writeError(w, reqID, errorf(http.StatusNotFound, "APIGW.0101", "The API does not exist or has not been published in the environment"))
		return
	}
	if err != nil {
		writeError(w, reqID, errorf(http.StatusBadRequest, "SIM.0001", "%v", err))
		return
	}
	writeJSON(w, http.StatusOK, s.Stats())
}

type simDeletedBody struct {
	Count     int      `json:"count"`
	ServerIDs []string `json:"server_ids"`
}

// parseFloat reads query parameter name as a number; a missing one is 0
// when optional.
func parseFloat(q url.Values, name string, optional bool) (float64, error) {
	v := q.Get(name)
	if v == "" && optional {
		return 0, nil
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %q is not a number", name, v)
	}
	return f, nil
}

func (s *Sim) serveSimServers(w http.ResponseWriter, r *http.Request, reqID string) {
	q := r.URL.Query()
	offset, limit := 0, -1
	for _, p := range []struct {
		name string
		dst  *int
	}{{"offset", &offset}, {"limit", &limit}} {
		if v := q.Get(p.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				writeError(w, reqID, errorf(http.StatusBadRequest, "SIM.0001", "%s %q is not a non-negative integer", p.name, v))
				return
			}
			*p.dst = n
		}
	}
	s.mu.Lock()
	s.settle(s.now())
	body := simServersBody{Servers: []ServerState{}}
	f := &s.fleet
	state := func(i int32) ServerState {
		st := f.state[i]
		return ServerState{ServerID: f.ids[i], KeypairName: f.keypairs[st.keypair], Status: int(st.status),
			Submits: int(st.submits), BadCode: st.bad.code()}
	}
	if id := q.Get("server_id"); id != "" {
		if i, ok := f.byID[id]; ok {
			st := state(i)
			st.Deleted = f.state[i].deleted
			body.Count = 1
			body.Servers = append(body.Servers, st)
		}
	} else {
		body.Count = f.len()
		for pos := offset; pos < f.len() && (limit < 0 || pos < offset+limit); pos++ {
			body.Servers = append(body.Servers, state(f.at(pos)))
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, body)
}
