package cphsim

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// Options configures a Sim. The zero value is a valid, fault-free simulator
// of an empty fleet that accepts no credentials; every field documents its
// zero value.
type Options struct {
	// ProjectID is the project whose paths are served; a request for any
	// other project id gets 403 CPS.0001. Empty: any project id is accepted.
	ProjectID string
	// AccessKey and SecretKey are the one AK/SK pair the gateway accepts.
	// Empty AccessKey: no signed request is accepted.
	AccessKey, SecretKey string
	// SecurityToken, when set, must be sent as X-Security-Token with signed
	// requests (temporary AK/SK). Empty: the header is not checked.
	SecurityToken string
	// AuthToken, when set, is an IAM token accepted in X-Auth-Token instead
	// of a signature. Empty: token authentication is refused.
	AuthToken string

	// Servers is the size of a generated fleet: server ids are 32 lowercase
	// hex digits drawn from Seed, names "cph-server-000000"…, status 5,
	// keypair "kp-old", created one second apart (the first is the newest).
	// Ignored when Fleet is set.
	Servers int
	// Fleet, when non-empty, is the fleet as given instead of a generated
	// one. Entries with an empty or repeated server_id are ignored (see
	// Validate); an empty keypair_name or create_time is kept as is.
	Fleet []cph.Server
	// Keypairs lists the keypairs the simulated KPS holds in every project
	// at the start (with made-up ed25519 public keys); keypairs imported
	// through KPS join them. Empty: every name exists until it is deleted
	// through KPS (phantom keypairs without a public key, which ListKeypairs
	// does not list), so that fleets rotated to any name keep working. A
	// job naming a keypair KPS does not hold in the request's project fails
	// with JobCodeKeypairNotFound.
	Keypairs []string

	// JobLatency is the mean time from a job's creation to its end; each
	// job's latency is uniform in [JobLatency-JobJitter, JobLatency+JobJitter]
	// (never negative). Zero: a job has ended by the time anyone looks.
	JobLatency time.Duration
	// JobJitter is the half-width of the job latency spread. Zero: every job
	// takes exactly JobLatency.
	JobJitter time.Duration

	// UpdateKeypairQuota, ListJobsQuota and ReadQuota are the per-second
	// rates of the token buckets of UpdateKeypair, of ListJobs, and of each
	// read call (ShowJob, ListServers, ShowServer: a bucket each, as the
	// gateway throttles every API on its own). Zero: unlimited.
	UpdateKeypairQuota, ListJobsQuota, ReadQuota float64
	// QuotaBurst is the bucket size of every quota. Zero: the quota's rate
	// rounded up (at least 1), like the gateway's "limit:N,time:1 second".
	QuotaBurst int
	// LegacyThrottleCode answers throttled requests with the old gateway
	// code APIG.0308 instead of APIGW.0308.
	LegacyThrottleCode bool
	// HideQuota leaves the quota out of 429 messages ("…: policy user over
	// ratelimit"), for clients that must find the quota without being told.
	HideQuota bool
	// RetryAfter adds a Retry-After header (whole seconds until a token is
	// available, at least 1) to 429 answers. False: no header, as observed.
	RetryAfter bool

	// Deny lists the APIs the caller's IAM policy does not allow: an
	// authenticated call to one is answered 403 CPS.0001 "No permission to
	// request resources." (Sim.SetDeny changes the list at run time). The
	// code and message are CPH's documented ones for a missing permission;
	// the status and their use for a policy without the action are our
	// reading, not yet seen on the real API. Nil: every API is allowed.
	Deny []API

	// Latency is the mean real time every API answer waits before it is
	// sent, after the call has done its work (so a client that gives up
	// early may miss the answer of a committed write); each wait is uniform
	// in [Latency-LatencyJitter, Latency+LatencyJitter] (never negative) and
	// cut short when the client goes away. The /_sim test aids do not wait.
	// Zero: answers are sent at once.
	Latency time.Duration
	// LatencyJitter is the half-width of the answer latency spread. Zero:
	// every answer waits exactly Latency.
	LatencyJitter time.Duration

	// Error5xxRate is the fraction of authenticated, unthrottled requests
	// answered with a random 500, 503 or 504 before anything is done.
	Error5xxRate float64
	// SlowRate is the fraction of requests delayed by SlowDelay (real time,
	// cut short when the client goes away) before they are answered.
	SlowRate float64
	// SlowDelay is the delay of a slow request. Zero: one second.
	SlowDelay time.Duration
	// DropRate is the fraction of requests whose connection is closed
	// without an answer.
	DropRate float64
	// DropBeforeCommit makes a dropped UpdateKeypair create no jobs. False:
	// the jobs are created and only the answer is lost, which is the case a
	// client must survive (its retry must not assume nothing happened).
	DropBeforeCommit bool
	// JobFailRate is the fraction of otherwise healthy jobs that fail with
	// the transient JobCodeTransient; submitting again may succeed.
	JobFailRate float64
	// BadServerRate is the fraction of servers that fail every time, chosen
	// once from Seed. What "fail" means is BadServerKind.
	BadServerRate float64
	// BadServerKind says how bad servers fail. Zero: BadMixed.
	BadServerKind BadKind
	// LieOnSuccess makes succeeded jobs leave the keypair unchanged, so a
	// client that verifies with ShowServer can catch the lie.
	LieOnSuccess bool

	// CreateRate and DeleteRate are the rates, in servers per second, at
	// which servers are created and deleted while the simulator runs, from
	// New on (Sim.SetChurn changes them): by any instant, floor(rate ×
	// seconds elapsed) servers have been created and as many deleted. A
	// created server is the newest, at the top of the list, so it pushes
	// every other server down one place; it has a fresh id, the next
	// "cph-server-NNNNNN" name, status 5, keypair "kp-old" and the clock's
	// time as create_time. A deleted server, drawn uniformly among the live
	// ones, is gone from the API (as an unknown id), and a job still running
	// for it ends failed with JobCodeServerDeleted. Zero: none.
	CreateRate, DeleteRate float64

	// Seed makes ids, bad servers, latencies and faults reproducible: the
	// same options and the same sequence of requests give the same answers.
	Seed uint64
	// Clock is the simulator's time. Nil: time.Now. Tests advance a fake
	// clock to move jobs forward instead of sleeping.
	Clock func() time.Time
}

// BadKind says how the servers picked by Options.BadServerRate fail.
type BadKind int

const (
	// BadMixed alternates between BadAbnormal and BadRejected.
	BadMixed BadKind = iota
	// BadAbnormal servers are listed with status 2 (abnormal); their jobs
	// are created and fail with JobCodeServerAbnormal.
	BadAbnormal
	// BadRejected servers are listed normally but UpdateKeypair rejects them
	// in its 200 answer with CPS.0016 "server_id is invalid." and no job.
	BadRejected
)

// Error codes the simulator puts in failed jobs. CPH documents none of
// them; they stand for "try again" and "will never work" so a client's
// classification can be tested.
const (
	JobCodeTransient       = "CPS.9001" // transient: submitting again may succeed
	JobCodeServerAbnormal  = "CPS.9002" // permanent: server not in status 5
	JobCodeKeypairNotFound = "CPS.9003" // permanent: keypair does not exist in the project's KPS
	JobCodeServerDeleted   = "CPS.9004" // permanent: the server was deleted while its job ran
)

// Validate reports options New would silently correct: rates outside
// [0, 1], negative or NaN quotas and churn rates, negative sizes or
// durations, unknown APIs in Deny, and fleet entries with an empty, too
// long or repeated server_id.
func (o Options) Validate() error {
	var errs []error
	rates := []struct {
		name string
		v    float64
	}{
		{"Error5xxRate", o.Error5xxRate}, {"SlowRate", o.SlowRate}, {"DropRate", o.DropRate},
		{"JobFailRate", o.JobFailRate}, {"BadServerRate", o.BadServerRate},
	}
	for _, r := range rates {
		if !(r.v >= 0 && r.v <= 1) {
			errs = append(errs, fmt.Errorf("option %s %v is not in [0, 1]", r.name, r.v))
		}
	}
	quotas := []struct {
		name string
		v    float64
	}{
		{"UpdateKeypairQuota", o.UpdateKeypairQuota}, {"ListJobsQuota", o.ListJobsQuota}, {"ReadQuota", o.ReadQuota},
	}
	for _, q := range quotas {
		if !(q.v >= 0) {
			errs = append(errs, fmt.Errorf("option %s %v is negative", q.name, q.v))
		}
	}
	// An infinite quota is unlimited, but an infinite churn rate has no
	// meaning: refuse it with the NaN and the negative.
	for _, c := range []struct {
		name string
		v    float64
	}{{"CreateRate", o.CreateRate}, {"DeleteRate", o.DeleteRate}} {
		if !(c.v >= 0) || math.IsInf(c.v, 1) {
			errs = append(errs, fmt.Errorf("option %s %v is not a finite number ≥ 0", c.name, c.v))
		}
	}
	if o.Servers < 0 {
		errs = append(errs, fmt.Errorf("option Servers %d is negative", o.Servers))
	}
	if o.QuotaBurst < 0 {
		errs = append(errs, fmt.Errorf("option QuotaBurst %d is negative", o.QuotaBurst))
	}
	if o.JobLatency < 0 || o.JobJitter < 0 || o.SlowDelay < 0 || o.Latency < 0 || o.LatencyJitter < 0 {
		errs = append(errs, errors.New("options JobLatency, JobJitter, SlowDelay, Latency and LatencyJitter must not be negative"))
	}
	for _, api := range o.Deny {
		if !api.known() {
			errs = append(errs, fmt.Errorf("option Deny: unknown API %q", api))
		}
	}
	if o.BadServerKind < BadMixed || o.BadServerKind > BadRejected {
		errs = append(errs, fmt.Errorf("option BadServerKind %d is unknown", o.BadServerKind))
	}
	seen := make(map[string]int, len(o.Fleet))
	for i, s := range o.Fleet {
		switch {
		case s.ServerID == "":
			errs = append(errs, fmt.Errorf("fleet entry %d: empty server_id", i))
		case len(s.ServerID) > maxServerID:
			errs = append(errs, fmt.Errorf("fleet entry %d: server_id %q is longer than %d bytes", i, s.ServerID, maxServerID))
		default:
			if j, dup := seen[s.ServerID]; dup {
				errs = append(errs, fmt.Errorf("fleet entry %d: server_id %s repeats entry %d", i, s.ServerID, j))
			}
			seen[s.ServerID] = i
		}
	}
	return errors.Join(errs...)
}

// Documented field limits of UpdateKeypair.
const (
	maxServerID = 32
	maxKeypair  = 64
)

func clamp01(v float64) float64 {
	if !(v > 0) {
		return 0
	}
	return min(v, 1)
}
