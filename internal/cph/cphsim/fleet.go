package cphsim

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// Generated servers: the newest was created at genNewest
// (2025-06-01T00:00:00Z), each next one a second earlier, so index order is
// the list order (create_time desc).
const genNewest = 1748736000

const genKeypair = "kp-old"

// badState says whether and how a server always fails.
type badState uint8

const (
	notBad badState = iota
	badAbnormal
	badRejected
)

// code is the error code a bad server fails with ("" if it is not bad).
func (b badState) code() string {
	switch b {
	case badAbnormal:
		return JobCodeServerAbnormal
	case badRejected:
		return "CPS.0016"
	}
	return ""
}

// server is the mutable state of one server, kept small because a fleet
// may hold a million of them; everything else is computed or in fleet.given.
type server struct {
	updated int64  // unix seconds of the last keypair change; 0: never
	submits int32  // how often UpdateKeypair named it
	keypair uint32 // index into fleet.keypairs
	status  int8
	bad     badState
	deleted bool // deleted by churn: gone from the API, kept for inspection
}

// fleet is the simulated servers and the keypair names they refer to.
// Servers are indexed in the order they came to exist: the initial fleet
// first, then those churn created. A deleted server keeps its index and
// state, and leaves only the list order.
type fleet struct {
	ids   []string
	byID  map[string]int32 // deleted servers included
	state []server
	given []cph.Server // Options.Fleet as kept; nil for a generated fleet
	// order is the list order reversed (the newest server last, so that a
	// creation is an append) of the live servers; nil: every server is
	// live and index order is the list order (a generated fleet before
	// churn touches it, which saves 4 bytes a server).
	order   []int32
	initial int32   // servers in the initial fleet; later indexes were created by churn
	born    []int64 // create_time (unix seconds) of server initial+k
	deleted []int32 // deleted servers in the order they were deleted

	keypairs []string // interned keypair names
	kpIndex  map[string]uint32
}

func newFleet(o Options) fleet {
	f := fleet{kpIndex: map[string]uint32{}}
	// Fleet draws have their own stream so that ids and bad servers do not
	// depend on anything that happens at request time.
	rng := rand.New(rand.NewPCG(o.Seed, 0xf1ee7))
	if len(o.Fleet) > 0 {
		f.load(o.Fleet)
	} else {
		f.generate(max(o.Servers, 0), rng)
	}
	f.initial = int32(len(f.state))
	rate := clamp01(o.BadServerRate)
	nbad := 0
	for i := range f.state {
		if rng.Float64() >= rate {
			continue
		}
		kind := o.BadServerKind
		if kind == BadMixed {
			kind = BadAbnormal
			if nbad%2 == 1 {
				kind = BadRejected
			}
		}
		nbad++
		if kind == BadAbnormal {
			f.state[i].bad, f.state[i].status = badAbnormal, cph.ServerStatusAbnormal
		} else {
			f.state[i].bad = badRejected
		}
	}
	return f
}

func (f *fleet) generate(n int, rng *rand.Rand) {
	f.ids = make([]string, 0, n)
	f.byID = make(map[string]int32, n)
	f.state = make([]server, n)
	old := f.intern(genKeypair)
	for i := range n {
		id := newID(rng)
		for _, dup := f.byID[id]; dup; _, dup = f.byID[id] {
			id = newID(rng)
		}
		f.byID[id] = int32(i)
		f.ids = append(f.ids, id)
		f.state[i] = server{keypair: old, status: cph.ServerStatusNormal}
	}
}

// load keeps the servers of fleet with a usable, first-seen id, and orders
// them by create_time descending (ties and unparsable times by position).
func (f *fleet) load(fleet []cph.Server) {
	f.byID = make(map[string]int32, len(fleet))
	for _, s := range fleet {
		if _, dup := f.byID[s.ServerID]; dup || s.ServerID == "" || len(s.ServerID) > maxServerID {
			continue
		}
		f.byID[s.ServerID] = int32(len(f.given))
		f.ids = append(f.ids, s.ServerID)
		f.given = append(f.given, s)
		f.state = append(f.state, server{keypair: f.intern(s.KeypairName), status: int8(s.Status)})
	}
	created := make([]int64, len(f.given))
	for i, s := range f.given {
		if t, err := time.Parse(timeFormat, s.CreateTime); err == nil {
			created[i] = t.Unix()
		}
	}
	f.order = make([]int32, len(f.given))
	for i := range f.order {
		f.order[i] = int32(i)
	}
	// Newest first with ties by position, then reversed, as order is kept.
	slices.SortStableFunc(f.order, func(a, b int32) int { return cmp.Compare(created[b], created[a]) })
	slices.Reverse(f.order)
}

func (f *fleet) intern(name string) uint32 {
	if i, ok := f.kpIndex[name]; ok {
		return i
	}
	i := uint32(len(f.keypairs))
	f.keypairs = append(f.keypairs, name)
	f.kpIndex[name] = i
	return i
}

// len is the number of live servers, the length of the list.
func (f *fleet) len() int {
	if f.order == nil {
		return len(f.state)
	}
	return len(f.order)
}

// at returns the index of the server in list position pos.
func (f *fleet) at(pos int) int32 {
	if f.order == nil {
		return int32(pos)
	}
	return f.order[len(f.order)-1-pos]
}

// live returns the index of serverID unless it is unknown or deleted.
func (f *fleet) live(serverID string) (int32, bool) {
	i, ok := f.byID[serverID]
	if !ok || f.state[i].deleted {
		return 0, false
	}
	return i, true
}

// server returns server i as the API shows it. Servers churn created look
// like generated ones, whatever the initial fleet was.
func (f *fleet) server(i int32) cph.Server {
	var s cph.Server
	if int(i) < len(f.given) {
		s = f.given[i]
	} else {
		created := time.Unix(f.createdAt(i), 0).UTC().Format(timeFormat)
		s = cph.Server{
			ServerID:            f.ids[i],
			ServerName:          fmt.Sprintf("cph-server-%06d", i),
			AvailabilityZone:    "cn-east-3a",
			ServerModelName:     "physical.kg1.4xlarge.cp",
			PhoneModelName:      "kg1.large.x86",
			NetworkVersion:      "v2",
			EnterpriseProjectID: "0",
			CreateTime:          created,
			UpdateTime:          created,
		}
	}
	st := f.state[i]
	s.KeypairName = f.keypairs[st.keypair]
	s.Status = int(st.status)
	if st.updated != 0 {
		s.UpdateTime = time.Unix(st.updated, 0).UTC().Format(timeFormat)
	}
	return s
}

// createdAt is the create_time of a generated or created server, in Unix
// seconds.
func (f *fleet) createdAt(i int32) int64 {
	if i < f.initial {
		return genNewest - int64(i)
	}
	return f.born[i-f.initial]
}

// serverFilter is the query of ListCloudPhoneServers the simulator honours.
type serverFilter struct {
	name, id, network, phoneModel string
	status                        int
	hasStatus                     bool
	since, until                  int64 // create_time bounds, Unix seconds; 0: none
}

func (sf serverFilter) empty() bool {
	return sf.name == "" && sf.id == "" && sf.network == "" && sf.phoneModel == "" && !sf.hasStatus &&
		sf.since == 0 && sf.until == 0
}

func (sf serverFilter) match(s cph.Server) bool {
	return (sf.name == "" || strings.Contains(strings.ToLower(s.ServerName), strings.ToLower(sf.name))) &&
		(sf.id == "" || s.ServerID == sf.id) &&
		(sf.network == "" || s.NetworkVersion == sf.network) &&
		(sf.phoneModel == "" || s.PhoneModelName == sf.phoneModel) &&
		(!sf.hasStatus || s.Status == sf.status) &&
		(sf.since == 0 && sf.until == 0 || sf.created(s.CreateTime))
}

func (sf serverFilter) created(createTime string) bool {
	t, err := time.Parse(timeFormat, createTime)
	if err != nil {
		return false
	}
	return (sf.since == 0 || t.Unix() >= sf.since) && (sf.until == 0 || t.Unix() <= sf.until)
}

type listServersBody struct {
	RequestID string       `json:"request_id"`
	Count     int          `json:"count"`
	Servers   []cph.Server `json:"servers"`
}

// listServers is ListCloudPhoneServers: servers by create_time descending,
// server_name matched as a case-insensitive substring, create_since and
// create_until as inclusive Unix-second bounds, count the number of matches.
func (s *Sim) listServers(r *request) (any, *apiError) {
	offset, limit, e := paging(r.query)
	if e != nil {
		return nil, e
	}
	q := func(k string) string { return first(r.query, k) }
	sf := serverFilter{name: q("server_name"), id: q("server_id"), network: q("network_version"), phoneModel: q("phone_model_name")}
	if v := q("status"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, errorf(http.StatusBadRequest, "CPS.0010", "Parameter: status is invalid.")
		}
		sf.status, sf.hasStatus = n, true
	}
	for _, b := range []struct {
		name string
		dst  *int64
	}{{"create_since", &sf.since}, {"create_until", &sf.until}} {
		if v := q(b.name); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return nil, errorf(http.StatusBadRequest, "CPS.0003", "Parameter: %s is invalid.", b.name)
			}
			*b.dst = n
		}
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(r.at)
	body := listServersBody{RequestID: r.id, Servers: []cph.Server{}}
	f := &s.fleet
	switch {
	case sf.empty():
		body.Count = f.len()
		for pos := offset; pos < f.len() && pos < offset+limit; pos++ {
			body.Servers = append(body.Servers, f.server(f.at(pos)))
		}
	case sf.id != "":
		if i, ok := f.live(sf.id); ok {
			if srv := f.server(i); sf.match(srv) {
				body.Count = 1
				if offset == 0 {
					body.Servers = append(body.Servers, srv)
				}
			}
		}
	default:
		for pos := range f.len() {
			srv := f.server(f.at(pos))
			if !sf.match(srv) {
				continue
			}
			if body.Count >= offset && body.Count < offset+limit {
				body.Servers = append(body.Servers, srv)
			}
			body.Count++
		}
	}
	return body, nil
}

type showServerBody struct {
	cph.Server
	RequestID string `json:"request_id"`
}

// showServer is ShowCloudPhoneServerDetail. An unknown or deleted id gets
// 400 CPS.0016, the documented code for an invalid server_id.
func (s *Sim) showServer(r *request) (any, *apiError) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(r.at)
	i, ok := s.fleet.live(r.param)
	if !ok {
		return nil, errorf(http.StatusBadRequest, "CPS.0016", "server_id is invalid.")
	}
	return showServerBody{Server: s.fleet.server(i), RequestID: r.id}, nil
}

// paging reads offset (≥ 0, default 0) and limit (1–100, default 100), or
// answers 400 CPS.0002 as CPH does.
func paging(query map[string][]string) (offset, limit int, e *apiError) {
	bad := errorf(http.StatusBadRequest, "CPS.0002", "Parameter: offset or limit is invalid.")
	offset, limit = 0, 100
	if v, ok := query["offset"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 0 {
			return 0, 0, bad
		}
		offset = n
	}
	if v, ok := query["limit"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 1 || n > 100 {
			return 0, 0, bad
		}
		limit = n
	}
	return offset, limit, nil
}

func first(query map[string][]string, key string) string {
	if v := query[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}
