package tasks

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/movinglist"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// movingFleet is a project's server list that moves: servers created go
// on top, deleted ones leave it. It counts the reads verification makes.
type movingFleet struct {
	mu      sync.Mutex
	ids     []string
	kp      map[string]string
	seq     int
	pages   int
	shows   int
	failAll bool // every read answers 503
	noShow  bool // ShowServer is not published: 404 APIGW.0101
	// planChurn servers are created before each page the plan reads
	// after the first, so its pages shift while it reads them.
	planChurn int
}

func newMovingFleet(n int) *movingFleet {
	f := &movingFleet{kp: map[string]string{}}
	for i := range n {
		id := fmt.Sprintf("s%05d", i)
		f.ids = append(f.ids, id)
		f.kp[id] = "kp-old"
	}
	return f
}

func (f *movingFleet) create(k int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range k {
		f.seq++
		id := fmt.Sprintf("new%05d", f.seq)
		f.ids = slices.Insert(f.ids, 0, id)
		f.kp[id] = "kp-old"
	}
}

func (f *movingFleet) delete(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ids = slices.DeleteFunc(f.ids, func(s string) bool { return s == id })
	delete(f.kp, id)
}

func (f *movingFleet) set(id, kp string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.kp[id]; ok {
		f.kp[id] = kp
	}
}

// ListServers reads the list as cph.Client does (movinglist.Sweep, 4 pages
// in flight at once, as at 20 reads a second and 200 ms a round trip),
// planChurn servers created before every read after the first.
func (f *movingFleet) ListServers(ctx context.Context, filter cph.ServerFilter, fn func([]cph.Server) error) error {
	sw := movinglist.Sweep[cph.Server]{
		Progress: func(p movinglist.Progress) {
			if filter.Progress != nil {
				filter.Progress(cph.ListProgress{Pages: p.Reads, TotalPages: p.Pages, ReReads: p.ReReads, Servers: p.Items, Count: p.Count})
			}
		},
		ID:       func(s cph.Server) string { return s.ServerID },
		InFlight: func() int { return 4 },
		Read: func(ctx context.Context, offset int) (movinglist.Window[cph.Server], error) {
			if offset > 0 {
				f.create(f.planChurn)
			}
			resp, err := f.ListServersPage(ctx, offset, 100)
			if err != nil {
				return movinglist.Window[cph.Server]{}, err
			}
			return movinglist.Window[cph.Server]{Items: resp.Servers, Count: resp.Count}, nil
		},
	}
	return sw.Run(ctx, fn)
}

func (f *movingFleet) ListServersPage(_ context.Context, offset, limit int) (*cph.ListServersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pages++
	if f.failAll {
		return nil, &cph.Error{Op: "ListCloudPhoneServers", StatusCode: 503, Kind: cph.KindTransient}
	}
	resp := &cph.ListServersResponse{Count: len(f.ids)}
	for i := offset; i < min(offset+limit, len(f.ids)); i++ {
		resp.Servers = append(resp.Servers, cph.Server{ServerID: f.ids[i], KeypairName: f.kp[f.ids[i]], Status: cph.ServerStatusNormal})
	}
	return resp, nil
}

func (f *movingFleet) ShowServer(_ context.Context, id string) (*cph.Server, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shows++
	if f.failAll {
		return nil, &cph.Error{Op: "ShowCloudPhoneServerDetail", StatusCode: 503, Kind: cph.KindTransient}
	}
	if f.noShow {
		return nil, &cph.Error{Op: "ShowCloudPhoneServerDetail", StatusCode: 404, Code: "APIGW.0101", Kind: cph.KindPermanent}
	}
	kp, ok := f.kp[id]
	if !ok {
		return nil, &cph.Error{Op: "ShowCloudPhoneServerDetail", StatusCode: 400, Code: "CPS.0016", Message: "server_id is invalid.", Kind: cph.KindPermanent}
	}
	return &cph.Server{ServerID: id, KeypairName: kp}, nil
}

func (f *movingFleet) UpdateKeypair(context.Context, []cph.ServerKeypair) (*cph.UpdateKeypairResponse, error) {
	return nil, fmt.Errorf("not used")
}

func (f *movingFleet) ListJobsOf(context.Context, int, ...string) ([]cph.Job, error) {
	return nil, fmt.Errorf("not used")
}

func (f *movingFleet) reads() (pages, shows int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.pages, f.shows
}

// allow is a limiter that never makes a call wait.
type allow struct{}

func (allow) Wait(context.Context, string) error                              { return nil }
func (allow) Throttled(context.Context, string, time.Duration, float64) error { return nil }
func (allow) Rate(string) float64                                             { return math.Inf(1) }

// deny is a limiter that always says "later", as a busy read quota does.
type deny struct{}

func (deny) Wait(context.Context, string) error {
	return &ratelimit.DelayError{RetryIn: time.Second}
}
func (deny) Throttled(context.Context, string, time.Duration, float64) error { return nil }
func (deny) Rate(string) float64                                             { return 20 }

// verifyRig is a started rotation whose every batch is checkpointed, on
// miniredis, with a handler whose API is a moving fleet.
type verifyRig struct {
	t     *testing.T
	ctx   context.Context
	store *Store
	h     *Handler
	fleet *movingFleet
	id    string
	now   time.Time
}

func newVerifyRig(t *testing.T, fleet *movingFleet, targets []string, positions bool) *verifyRig {
	t.Helper()
	rdb := testredis.Mini(t).Client(t)
	ctx := context.Background()
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	t.Cleanup(func() { enq.Close() })
	var ts []Target
	for _, id := range targets {
		ts = append(ts, Target{ServerID: id})
	}
	plan, err := MakePlan(ctx, Spec{Keypair: "kp-new", Targets: ts, ChunkSize: 100, MaxAttempts: 3, SkipMatching: positions}, fleet)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if _, err := Start(ctx, store, enq, plan, TaskOptions{}, now); err != nil {
		t.Fatal(err)
	}
	v := &verifyRig{t: t, ctx: ctx, store: store, fleet: fleet, id: plan.Rotation.ID, now: now,
		h: NewHandler(HandlerOptions{Store: store, API: fleet, Limiter: allow{}, Enqueuer: enq, Logger: testLogger()})}
	v.h.now = func() time.Time { return v.now }
	for n := 1; n <= plan.Rotation.Chunks; n++ {
		b, err := store.Batch(ctx, v.id, n)
		if err != nil {
			t.Fatal(err)
		}
		jobs := map[string]string{}
		for _, e := range b.Servers {
			jobs[e.ServerID] = "job-" + e.ServerID
		}
		if _, err := store.Checkpoint(ctx, v.id, n, len(b.Servers), fmt.Sprintf("req-%d", n), jobs, nil, now, now.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	fleet.mu.Lock()
	fleet.pages, fleet.shows = 0, 0 // the plan's reads are not verification's
	fleet.mu.Unlock()
	return v
}

// succeed records that the jobs of batch n succeeded (but for the
// servers in retry, which failed transiently) and changes the fleet.
func (v *verifyRig) succeed(n int, retry ...string) {
	v.t.Helper()
	rot, err := v.store.Rotation(v.ctx, v.id)
	if err != nil {
		v.t.Fatal(err)
	}
	b, err := v.store.Batch(v.ctx, v.id, n)
	if err != nil {
		v.t.Fatal(err)
	}
	var rs []Resolution
	for _, e := range b.Servers {
		if slices.Contains(retry, e.ServerID) {
			rs = append(rs, v.h.failure(rot, e, "job-"+e.ServerID, "CPS.9001", "try again", v.now))
			continue
		}
		v.fleet.set(e.ServerID, e.Keypair)
		rs = append(rs, Resolution{ServerID: e.ServerID, Verify: true, JobID: "job-" + e.ServerID, Attempts: e.Attempt, Entry: e})
	}
	if _, err := v.store.Resolve(v.ctx, v.id, n, rot.waveOfBatch(n), rs, time.Time{}, false, v.now); err != nil {
		v.t.Fatal(err)
	}
}

// verify runs verification rounds until nothing more comes of them.
func (v *verifyRig) verify(rounds int) *Rotation {
	v.t.Helper()
	for range rounds {
		rot, err := v.store.Rotation(v.ctx, v.id)
		if err != nil {
			v.t.Fatal(err)
		}
		if rot.Counts.Verifying == 0 {
			return rot
		}
		if err := v.h.verify(v.ctx, v.h.log, rot, &round{now: v.now}); err != nil {
			v.t.Fatal(err)
		}
	}
	rot, err := v.store.Rotation(v.ctx, v.id)
	if err != nil {
		v.t.Fatal(err)
	}
	return rot
}

func (v *verifyRig) report() map[string]ReportRow {
	v.t.Helper()
	rows := map[string]ReportRow{}
	err := v.store.Report(v.ctx, v.id, func(r ReportRow) error { rows[r.ServerID] = r; return nil })
	if err != nil {
		v.t.Fatal(err)
	}
	return rows
}

// TestVerifyFollowsAMovingList: servers created on top of the list and
// deleted from it while a rotation runs shift every page; verification
// still reads about one page per 100 servers, and a deleted target ends
// skipped with a code that says so.
func TestVerifyFollowsAMovingList(t *testing.T) {
	fleet := newMovingFleet(2000)
	fleet.planChurn = 1
	targets := slices.Clone(fleet.ids)
	v := newVerifyRig(t, fleet, targets, true)
	rng := rand.New(rand.NewPCG(7, 7))
	deleted := map[string]bool{}
	for n := 1; n <= 20; n++ {
		// Now and then a server created, or a target not verified yet
		// deleted, between batches' ends.
		if rng.IntN(4) == 0 {
			fleet.create(1)
		}
		if n%3 == 0 {
			id := targets[(n-1)*100+rng.IntN(len(targets)-(n-1)*100)]
			fleet.delete(id)
			deleted[id] = true
		}
		v.succeed(n)
		v.verify(3)
	}
	rot := v.verify(20)
	if rot.Counts.Verifying != 0 || !rot.Finished() {
		t.Fatalf("rotation %+v: want finished, nothing verifying", rot.Counts)
	}
	for id, row := range v.report() {
		switch {
		case deleted[id] && (row.Outcome != OutcomeSkipped || row.ErrorCode != CodeServerDeleted):
			t.Errorf("deleted %s: %s %s, want skipped %s", id, row.Outcome, row.ErrorCode, CodeServerDeleted)
		case !deleted[id] && row.Outcome != OutcomeSucceeded:
			t.Errorf("%s: %s %s %s, want succeeded", id, row.Outcome, row.ErrorCode, row.ErrorMsg)
		}
	}
	pages, shows := fleet.reads()
	t.Logf("%d page reads and %d ShowServer for 20 pages, %d deleted", pages, shows, len(deleted))
	if pages > 30 || shows > len(deleted)+10 {
		t.Fatalf("%d page reads and %d ShowServer: want about one page per 100 servers, ShowServer for the deleted and a few", pages, shows)
	}
}

// TestVerifyWithoutPositionsSweeps: with no place known for any target
// (--skip-matching=false), verification reads the list's pages rather
// than one ShowServer per server.
func TestVerifyWithoutPositionsSweeps(t *testing.T) {
	fleet := newMovingFleet(2000)
	v := newVerifyRig(t, fleet, slices.Clone(fleet.ids), false)
	for n := 1; n <= 20; n++ {
		if n%4 == 0 {
			fleet.create(1)
		}
		v.succeed(n)
		v.verify(3)
	}
	rot := v.verify(50)
	if rot.Counts.Succeeded != 2000 {
		t.Fatalf("counts %+v: want 2000 succeeded", rot.Counts)
	}
	pages, shows := fleet.reads()
	t.Logf("%d page reads, %d ShowServer", pages, shows)
	if pages > 2*21+6 || shows > 10 {
		t.Fatalf("%d page reads and %d ShowServer for 20 pages: want a sweep and a read per page at most", pages, shows)
	}
}

// TestVerifyBacklogIsNotFailure: servers whose job succeeded wait for a
// read the quota does not allow for longer than the job timeout: they
// stay waiting, never failed.
func TestVerifyBacklogIsNotFailure(t *testing.T) {
	fleet := newMovingFleet(300)
	v := newVerifyRig(t, fleet, slices.Clone(fleet.ids), true)
	v.h.places = func(Place) (API, Limiter) { return fleet, deny{} }
	for n := 1; n <= 3; n++ {
		v.succeed(n)
	}
	v.now = v.now.Add(2 * v.h.cfg.JobTimeout)
	rot := v.verify(3)
	if rot.Counts.Failed != 0 || rot.Counts.Verifying != 300 {
		t.Fatalf("counts %+v after a read backlog past the job timeout: want 300 verifying, none failed", rot.Counts)
	}
	v.h.places = func(Place) (API, Limiter) { return fleet, allow{} }
	if rot := v.verify(5); rot.Counts.Succeeded != 300 {
		t.Fatalf("counts %+v once reads are allowed: want 300 succeeded", rot.Counts)
	}
}

// TestVerifyUnavailable: reads that fail (not wait) for the job timeout
// end the servers with their own code, not a mismatch.
func TestVerifyUnavailable(t *testing.T) {
	fleet := newMovingFleet(100)
	v := newVerifyRig(t, fleet, slices.Clone(fleet.ids), true)
	v.succeed(1)
	fleet.failAll = true
	v.verify(1)
	v.now = v.now.Add(v.h.cfg.JobTimeout + time.Second)
	rot := v.verify(3)
	if rot.Counts.Failed != 100 {
		t.Fatalf("counts %+v: want 100 failed", rot.Counts)
	}
	for id, row := range v.report() {
		if row.ErrorCode != CodeVerifyUnavailable || !strings.Contains(row.ErrorMsg, "could not be read back") {
			t.Fatalf("%s: %s %q, want %s", id, row.ErrorCode, row.ErrorMsg, CodeVerifyUnavailable)
		}
	}
}

// TestPageReadBeforeRetryEnds: a page whose first attempts have ended is
// read at once, though one of its servers is being retried; the retried
// one is read when its retry ends.
func TestPageReadBeforeRetryEnds(t *testing.T) {
	fleet := newMovingFleet(100)
	v := newVerifyRig(t, fleet, slices.Clone(fleet.ids), true)
	v.succeed(1, "s00042")
	rot := v.verify(2)
	if rot.Counts.Succeeded != 99 || rot.Counts.Pending != 1 {
		t.Fatalf("counts %+v: want 99 succeeded while s00042 waits for its retry", rot.Counts)
	}
	if pages, _ := fleet.reads(); pages != 1 {
		t.Fatalf("%d page reads, want one", pages)
	}
}

// TestUnknownOutcomeIsRead: servers whose job outcome is unknown are read
// back before anything else: those on the target succeed, the others go
// back for another attempt, none is failed or submitted blind.
func TestUnknownOutcomeIsRead(t *testing.T) {
	fleet := newMovingFleet(100)
	v := newVerifyRig(t, fleet, slices.Clone(fleet.ids), true)
	b, err := v.store.Batch(v.ctx, v.id, 1)
	if err != nil {
		t.Fatal(err)
	}
	var rs []Resolution
	for i, e := range b.Servers {
		if i%2 == 0 {
			fleet.set(e.ServerID, e.Keypair) // the job did change it
		}
		rs = append(rs, Resolution{ServerID: e.ServerID, Verify: true, Unknown: true, JobID: "job-" + e.ServerID, Attempts: 1, Entry: e})
	}
	if _, err := v.store.Resolve(v.ctx, v.id, 1, 1, rs, time.Time{}, false, v.now); err != nil {
		t.Fatal(err)
	}
	rot := v.verify(3)
	if rot.Counts.Succeeded != 50 || rot.Counts.Pending != 50 || rot.Counts.Retried != 50 || rot.Counts.Failed != 0 {
		t.Fatalf("counts %+v: want 50 succeeded and 50 back in the retry pool", rot.Counts)
	}
	pool, err := v.store.RetryPool(v.ctx, v.id, v.now.Add(time.Hour))
	if err != nil || pool.Size != 50 {
		t.Fatalf("retry pool %+v, %v: want the 50 not on the target", pool, err)
	}
}

// TestRefusedServerIsReadBack: UpdateKeypair refused two servers the plan
// had listed (CPS.0016): the one deleted since is skipped as deleted, the
// one still there fails with the API's refusal.
func TestRefusedServerIsReadBack(t *testing.T) {
	fleet := newMovingFleet(100)
	v := newVerifyRig(t, fleet, slices.Clone(fleet.ids), true)
	fleet.delete("s00010")
	b, err := v.store.Batch(v.ctx, v.id, 1)
	if err != nil {
		t.Fatal(err)
	}
	b.Errors = map[string][2]string{"s00010": {"CPS.0016", "server_id is invalid."}, "s00020": {"CPS.0016", "server_id is invalid."}}
	rot, err := v.store.Rotation(v.ctx, v.id)
	if err != nil {
		t.Fatal(err)
	}
	rs := v.h.resolveAnswer(rot, b, v.now)
	if _, err := v.store.Resolve(v.ctx, v.id, 1, 1, rs, time.Time{}, false, v.now); err != nil {
		t.Fatal(err)
	}
	v.now = v.now.Add(v.h.cfg.VerifyLinger) // the other jobs of the page have not ended
	if rot := v.verify(3); rot.Counts.Verifying != 0 {
		t.Fatalf("counts %+v after verification", rot.Counts)
	}
	rows := v.report()
	if r := rows["s00010"]; r.Outcome != OutcomeSkipped || r.ErrorCode != CodeServerDeleted {
		t.Errorf("deleted server: %s %s, want skipped %s", r.Outcome, r.ErrorCode, CodeServerDeleted)
	}
	if r := rows["s00020"]; r.Outcome != OutcomeFailed || r.ErrorCode != "CPS.0016" || r.ErrorMsg != "server_id is invalid." {
		t.Errorf("refused server: %s %s %q, want failed CPS.0016", r.Outcome, r.ErrorCode, r.ErrorMsg)
	}
}

// TestShowRefusedFallsBackToSweep: a few servers without a place are read
// with ShowServer; when ShowServer fails for good, a sweep of the list
// reads them instead of failing them.
func TestShowRefusedFallsBackToSweep(t *testing.T) {
	fleet := newMovingFleet(1000)
	fleet.noShow = true
	targets := []string{"s00005", "s00250", "s00777"}
	v := newVerifyRig(t, fleet, targets, false)
	v.succeed(1)
	rot := v.verify(5)
	if rot.Counts.Succeeded != 3 {
		t.Fatalf("counts %+v: want the 3 servers read back by a sweep", rot.Counts)
	}
	if pages, shows := fleet.reads(); shows > 3 || pages != 8 {
		t.Fatalf("%d page reads and %d ShowServer: want one round of refused ShowServer, then the 8 pages up to the last server", pages, shows)
	}
}

func testLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// ratedPer grants every call at once and says it grants each API its own
// rate (20 a second for those it does not name).
type ratedPer map[string]float64

func (ratedPer) Wait(context.Context, string) error                              { return nil }
func (ratedPer) Throttled(context.Context, string, time.Duration, float64) error { return nil }
func (r ratedPer) Rate(api string) float64 {
	if q, ok := r[api]; ok {
		return q
	}
	return 20
}

// TestEarlyReadsFree: a page is read before its retried servers end only
// where a second read costs the rotation no time: with no failures, with a
// read quota twice the submit quota, or at the tail; not while the reads
// would outlast the submits.
func TestEarlyReadsFree(t *testing.T) {
	// 20,000 servers, 2,000 ended (100 of them failed), 4,000 running.
	midway := Counts{Total: 20000, Pending: 14000, Running: 4000, Submitted: 6000, Retried: 100}
	tail := Counts{Total: 20000, Pending: 0, Running: 300, Submitted: 21000, Retried: 1000}
	tests := []struct {
		name   string
		counts Counts
		rates  ratedPer
		want   bool
	}{
		{"no failures", Counts{Total: 20000, Pending: 14000, Running: 4000, Submitted: 6000}, ratedPer{}, true},
		{"5 %, every API at Q", midway, ratedPer{}, false},
		{"5 %, reads at 2 Q (the defaults)", midway, ratedPer{APIUpdateKeypair: 10}, true},
		{"5 %, at the tail", tail, ratedPer{}, true},
		{"nothing ended yet", Counts{Total: 20000, Pending: 16000, Running: 4000, Submitted: 4000}, ratedPer{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := NewHandler(HandlerOptions{Limiter: tt.rates})
			rot := &Rotation{ChunkSize: 100, Counts: tt.counts, jobLatency: 2 * time.Second}
			if got := h.earlyReadsFree(rot); got != tt.want {
				t.Fatalf("earlyReadsFree = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSweepWidth: a sweep reads side by side as many pages as its rate
// grants during a round trip, and one at a time where reads take no time
// or the rate is not limited.
func TestSweepWidth(t *testing.T) {
	tests := []struct {
		rate    float64
		latency time.Duration
		want    int
	}{
		{20, 0, 1},
		{20, 2 * time.Millisecond, 1},
		{20, 300 * time.Millisecond, 6},
		{20, time.Second, 20},
		{100, time.Second, sweepPerRound},
		{math.Inf(1), 300 * time.Millisecond, 1},
	}
	for _, tt := range tests {
		h := NewHandler(HandlerOptions{Limiter: rated(tt.rate)})
		if tt.latency > 0 {
			h.lat.observe(APIListServers, tt.latency)
		}
		v := &verification{h: h, rot: &Rotation{}}
		if got := v.sweepWidth(); got != tt.want {
			t.Errorf("%v/s at %v: width %d, want %d", tt.rate, tt.latency, got, tt.want)
		}
	}
}

// TestVerifyWithoutPositionsSweepsSideBySide: at a round trip of 300 ms a
// sweep reads its pages six at a time, and still verifies every server
// with a read a page and a few more.
func TestVerifyWithoutPositionsSweepsSideBySide(t *testing.T) {
	fleet := newMovingFleet(2000)
	v := newVerifyRig(t, fleet, slices.Clone(fleet.ids), false)
	v.h.places = func(Place) (API, Limiter) { return fleet, rated(20) }
	v.h.lat.observe(APIListServers, 300*time.Millisecond)
	for n := 1; n <= 20; n++ {
		v.succeed(n)
	}
	rot := v.verify(10)
	if rot.Counts.Succeeded != 2000 {
		t.Fatalf("counts %+v: want 2000 succeeded", rot.Counts)
	}
	if pages, shows := fleet.reads(); pages > 20+sweepPerRound || shows > 0 {
		t.Fatalf("%d page reads and %d ShowServer for 20 pages: want the sweep's and a few more", pages, shows)
	}
}
