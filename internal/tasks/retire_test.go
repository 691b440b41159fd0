package tasks

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// fakeFleet is a project's server list, read whole.
type fakeFleet struct {
	servers []cph.Server
	reads   int
}

func (f *fakeFleet) ListServers(_ context.Context, _ cph.ServerFilter, fn func([]cph.Server) error) error {
	f.reads++
	for i := 0; i < len(f.servers); i += 2 {
		if err := fn(f.servers[i:min(i+2, len(f.servers))]); err != nil {
			return err
		}
	}
	return nil
}

// fakeKPS is a project's KPS: the keypairs it holds, and a status every
// delete answers instead when set.
type fakeKPS struct {
	mu      sync.Mutex
	held    map[string]bool
	refuse  int
	deletes []string
}

func (k *fakeKPS) Delete(_ context.Context, name string) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.deletes = append(k.deletes, name)
	if k.refuse != 0 {
		return &cph.Error{Op: "DeleteKeypair", StatusCode: k.refuse, Code: "KPS.0403", Kind: cph.KindPermanent}
	}
	if !k.held[name] {
		return &cph.Error{Op: "DeleteKeypair", StatusCode: http.StatusNotFound, Code: "KPS.0003", Kind: cph.KindPermanent}
	}
	delete(k.held, name)
	return nil
}

// retireRotation creates rotation id over servers (id → old keypair, all
// to kp-new) and records every one with outcome o, which finishes it.
func retireRotation(t *testing.T, s *Store, id string, old map[string]string, o Outcome) {
	t.Helper()
	ctx := context.Background()
	var ids []string
	for sid := range old {
		ids = append(ids, sid)
	}
	slices.Sort(ids)
	chunk := entries(ids...)
	for i := range chunk {
		chunk[i].OldKeypair = old[chunk[i].ServerID]
	}
	if _, err := s.Create(ctx, testRotation(id, [][]Entry{chunk}), [][]Entry{chunk}, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	checkpoint(t, s, id, 1, ids...)
	if _, err := s.Resolve(ctx, id, 1, 1, outcomes(o, ids...), time.Time{}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	if rot := mustRotation(t, s, id); !rot.Finished() {
		t.Fatalf("rotation %s did not finish: %+v", id, rot)
	}
}

func placesOf(f *fakeFleet, k *fakeKPS) RetirePlaces {
	return func(Place) (*RetireAt, error) {
		return &RetireAt{Fleet: f, Keypairs: k, Region: "cn-north-4", ProjectID: "p1"}, nil
	}
}

// A retire deletes the old keypair no server of the project is on, keeps
// the one a server outside the rotation still uses (naming it), never
// touches the target, and is stored with the rotation; a dry run deletes
// and stores nothing; a second run finds the keypair gone and counts it
// deleted.
func TestRetireDeletesOnlyUnusedOldKeypairs(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		retireRotation(t, s, "r1", map[string]string{"s0": "kp-old", "s1": "kp-old", "s2": "kp-older", "s3": "", "s4": "kp-new"}, OutcomeSucceeded)
		fleet := &fakeFleet{servers: []cph.Server{
			{ServerID: "s0", KeypairName: "kp-new"}, {ServerID: "s1", KeypairName: "kp-new"}, {ServerID: "s2", KeypairName: "kp-new"},
			{ServerID: "s3", KeypairName: "kp-new"}, {ServerID: "s4", KeypairName: "kp-new"}, {ServerID: "x1", KeypairName: "kp-older"},
			{ServerID: "x2", KeypairName: "kp-other"},
		}}
		kps := &fakeKPS{held: map[string]bool{"kp-old": true, "kp-older": true, "kp-new": true}}

		dry, err := Retire(ctx, s, placesOf(fleet, kps), "r1", RetireOptions{DryRun: true}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(kps.deletes) != 0 || mustRotation(t, s, "r1").Retired != nil {
			t.Fatalf("dry run deleted %v or stored an outcome", kps.deletes)
		}
		if !dry.DryRun || len(dry.Places) != 1 || fmt.Sprint(dry.Places[0].Deleted) != "[{kp-old false}]" {
			t.Fatalf("dry run = %+v", dry.Places[0])
		}

		got, err := Retire(ctx, s, placesOf(fleet, kps), "r1", RetireOptions{Actor: "alice"}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		p := got.Places[0]
		if fmt.Sprint(kps.deletes) != "[kp-old]" || !kps.held["kp-new"] || !kps.held["kp-older"] {
			t.Errorf("deleted %v, KPS holds %v; want kp-old deleted only", kps.deletes, kps.held)
		}
		if p.Region != "cn-north-4" || p.ProjectID != "p1" || p.Unrecorded != 1 || len(p.Deleted) != 1 || len(p.Kept) != 1 {
			t.Fatalf("outcome %+v", p)
		}
		if k := p.Kept[0]; k.Keypair != "kp-older" || k.Reason != KeptInUse || k.Servers != 1 || k.String() != "1 server still uses it: x1" {
			t.Errorf("kept %+v (%s)", k, k)
		}
		stored := mustRotation(t, s, "r1").Retired
		if stored == nil || fmt.Sprint(stored.DeletedNames()) != "[kp-old in cn-north-4/p1]" {
			t.Fatalf("stored outcome %+v", stored)
		}

		// Run again: the keypair is gone, which counts as deleted, by the
		// first run; gone without a run having deleted it, it is said to
		// have been gone already.
		again, err := Retire(ctx, s, placesOf(fleet, kps), "r1", RetireOptions{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if d := again.Places[0].Deleted; len(d) != 1 || d[0].AlreadyGone || len(kps.deletes) != 2 {
			t.Errorf("second run deleted %+v (calls %v), want kp-old deleted by the first", d, kps.deletes)
		}
		// The history says it once, with who and what, the dry run not at all.
		hist, err := s.History(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		var retired []HistoryEntry
		for _, e := range hist {
			if e.Kind == HistoryKeypairRetired {
				retired = append(retired, e)
			}
		}
		if len(retired) != 1 || retired[0].Actor != "alice" ||
			retired[0].Detail != "deleted kp-old; kept kp-older (1 server still uses it: x1)" {
			t.Errorf("history's retire entries %+v, want one by alice naming kp-old deleted and kp-older kept", retired)
		}
		retireRotation(t, s, "r2", map[string]string{"s5": "kp-gone"}, OutcomeSucceeded)
		gone, err := Retire(ctx, s, placesOf(fleet, kps), "r2", RetireOptions{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if d := gone.Places[0].Deleted; len(d) != 1 || !d[0].AlreadyGone {
			t.Errorf("retire of a keypair KPS never held: %+v, want it already gone", d)
		}
	})
}

// Many servers on a kept keypair: the count is whole, the sample the first
// five.
func TestKeptKeypairNamesFirstFive(t *testing.T) {
	k := KeptKeypair{Keypair: "kp-old", Reason: KeptInUse, Servers: 7, Sample: []string{"a", "b", "c", "d", "e"}}
	if got, want := k.String(), "7 servers still use it: a, b, c, d, e (first 5 shown)"; got != want {
		t.Errorf("String = %q, want %q", got, want)
	}
}

// A retire is refused before any read for a rotation not finished, and
// for one that did not succeed unless allowed; denied deletes name the
// IAM action; an old keypair that is another server's target is kept.
func TestRetireRefusals(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		fleet := &fakeFleet{}
		kps := &fakeKPS{held: map[string]bool{"kp-old": true}}

		controlled(t, s, "running", []int{2}, nil, 5, false)
		retireRotation(t, s, "failed", map[string]string{"s0": "kp-old"}, OutcomeFailed)
		for _, tt := range []struct {
			id   string
			opts RetireOptions
			want string
		}{
			{"running", RetireOptions{}, "has not finished"},
			{"running", RetireOptions{AllowIncomplete: true}, "has not finished"},
			{"failed", RetireOptions{}, "--allow-incomplete"},
		} {
			_, err := Retire(ctx, s, placesOf(fleet, kps), tt.id, tt.opts, time.Now())
			if !errors.Is(err, ErrRetireRefused) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Retire(%s, %+v) = %v, want a refusal saying %q", tt.id, tt.opts, err, tt.want)
			}
		}
		if fleet.reads != 0 || len(kps.deletes) != 0 {
			t.Fatalf("refused retires read the fleet %d times, deleted %v", fleet.reads, kps.deletes)
		}
		// Allowed: the failed server is still on kp-old, read back.
		fleet.servers = []cph.Server{{ServerID: "s0", KeypairName: "kp-old"}}
		got, err := Retire(ctx, s, placesOf(fleet, kps), "failed", RetireOptions{AllowIncomplete: true}, time.Now())
		if err != nil || len(got.Places[0].Deleted) != 0 || got.Places[0].Kept[0].Servers != 1 {
			t.Fatalf("allowed retire = %+v, %v; want kp-old kept", got, err)
		}

		fleet.servers = nil
		kps.refuse = http.StatusBadRequest
		got, err = Retire(ctx, s, placesOf(fleet, kps), "failed", RetireOptions{AllowIncomplete: true}, time.Now())
		if err != nil || len(got.Places[0].Kept) != 1 || !strings.HasPrefix(got.Places[0].Kept[0].String(), "KPS refused to delete it: ") {
			t.Fatalf("KPS refusing the delete: %+v, %v; want kp-old kept, saying why", got, err)
		}
		kps.refuse = http.StatusForbidden
		_, err = Retire(ctx, s, placesOf(fleet, kps), "failed", RetireOptions{AllowIncomplete: true}, time.Now())
		if err == nil || !strings.Contains(err.Error(), DeleteAction) || !strings.Contains(err.Error(), "cn-north-4/p1") {
			t.Errorf("denied delete: %v; want the IAM action and the place named", err)
		}

		// s1 moves from kp-a to kp-b while s2 moves onto kp-a: kp-a stays.
		chunk := []Entry{{ServerID: "s1", OldKeypair: "kp-a", Keypair: "kp-b", Attempt: 1}, {ServerID: "s2", OldKeypair: "kp-c", Keypair: "kp-a", Attempt: 1}}
		if _, err := s.Create(ctx, testRotation("mixed", [][]Entry{chunk}), [][]Entry{chunk}, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
		checkpoint(t, s, "mixed", 1, "s1", "s2")
		if _, err := s.Resolve(ctx, "mixed", 1, 1, outcomes(OutcomeSucceeded, "s1", "s2"), time.Time{}, false, time.Now()); err != nil {
			t.Fatal(err)
		}
		kps = &fakeKPS{held: map[string]bool{"kp-a": true, "kp-b": true, "kp-c": true}}
		got, err = Retire(ctx, s, placesOf(fleet, kps), "mixed", RetireOptions{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if p := got.Places[0]; fmt.Sprint(kps.deletes) != "[kp-c]" || len(p.Kept) != 1 || p.Kept[0].Reason != KeptTarget {
			t.Errorf("deleted %v, outcome %+v; want kp-c deleted, kp-a kept as a target", kps.deletes, p)
		}
	})
}

// recordingEnqueuer keeps what was enqueued, refusing a task ID twice as
// asynq does.
type recordingEnqueuer struct {
	tasks map[string]*asynq.Task
}

func (e *recordingEnqueuer) EnqueueContext(_ context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error) {
	var id string
	for _, o := range opts {
		if o.Type() == asynq.TaskIDOpt {
			id = o.Value().(string)
		}
	}
	if _, ok := e.tasks[id]; ok {
		return nil, asynq.ErrTaskIDConflict
	}
	e.tasks[id] = t
	return &asynq.TaskInfo{ID: id}, nil
}

// Scheduling a retire twice enqueues one task, due once; the worker's run
// of it stores the outcome and clears the due time, and a failed run
// stores its error.
func TestScheduleRetireOnce(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		retireRotation(t, s, "r1", map[string]string{"s0": "kp-old"}, OutcomeSucceeded)
		enq := &recordingEnqueuer{tasks: map[string]*asynq.Task{}}
		now := time.Now()
		due, ok, err := ScheduleRetire(ctx, s, enq, "r1", RetireOptions{}, time.Hour, now)
		if err != nil || !ok {
			t.Fatalf("ScheduleRetire = %v, %v", ok, err)
		}
		due2, ok, err := ScheduleRetire(ctx, s, enq, "r1", RetireOptions{}, 2*time.Hour, now)
		if err != nil || ok || !due2.Equal(due) || len(enq.tasks) != 1 {
			t.Fatalf("second ScheduleRetire = %v, %v, due %v (first %v), %d tasks; want the first left as it is", ok, err, due2, due, len(enq.tasks))
		}
		if rot := mustRotation(t, s, "r1"); !rot.RetireDue.Equal(due) {
			t.Errorf("rotation's retire due %v, want %v", rot.RetireDue, due)
		}
		task := enq.tasks[RetireTaskID("r1")]
		var p RetirePayload
		if err := json.Unmarshal(task.Payload(), &p); err != nil || p.Rotation != "r1" || task.Type() != TypeRetire {
			t.Fatalf("task %s %s: %v", task.Type(), task.Payload(), err)
		}

		kps := &fakeKPS{held: map[string]bool{"kp-old": true}, refuse: http.StatusForbidden}
		h := NewHandler(HandlerOptions{Store: s, Retire: placesOf(&fakeFleet{}, kps)})
		if err := h.HandleRetire(ctx, task); !errors.Is(err, asynq.SkipRetry) {
			t.Errorf("denied run: %v, want it not retried", err)
		}
		if rot := mustRotation(t, s, "r1"); !strings.Contains(rot.RetireError, DeleteAction) || rot.Retired != nil {
			t.Errorf("after a denied run: error %q, outcome %+v", rot.RetireError, rot.Retired)
		}
		kps.refuse = 0
		if err := h.HandleRetire(ctx, task); err != nil {
			t.Fatal(err)
		}
		rot := mustRotation(t, s, "r1")
		if rot.Retired == nil || len(rot.Retired.Deleted) != 1 || rot.RetireError != "" || !rot.RetireDue.IsZero() {
			t.Errorf("after the run: outcome %+v, error %q, due %v", rot.Retired, rot.RetireError, rot.RetireDue)
		}
	})
}

// A rotation across places is retired part by part, each in its own
// project's fleet and KPS, and each part keeps its own outcome.
func TestRetireGroupPartByPart(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		places := []Place{{}, {Region: "cn-east-3", ProjectID: "p2"}}
		g := &Group{ID: "g", Parts: []string{PartID("g", 1), PartID("g", 2)}, CreatedAt: time.Now()}
		if _, err := s.CreateGroup(ctx, g); err != nil {
			t.Fatal(err)
		}
		for i, id := range g.Parts {
			sid := fmt.Sprintf("s%d", i)
			chunk := entries(sid)
			rot := testRotation(id, [][]Entry{chunk})
			rot.Group, rot.Region, rot.ProjectID = "g", places[i].Region, places[i].ProjectID
			if _, err := s.Create(ctx, rot, [][]Entry{chunk}, nil, time.Now()); err != nil {
				t.Fatal(err)
			}
			checkpoint(t, s, id, 1, sid)
			if _, err := s.Resolve(ctx, id, 1, 1, outcomes(OutcomeSucceeded, sid), time.Time{}, false, time.Now()); err != nil {
				t.Fatal(err)
			}
		}
		// The second project has a server outside the rotation on kp-old.
		fleets := map[Place]*fakeFleet{places[0]: {}, places[1]: {servers: []cph.Server{{ServerID: "x", KeypairName: "kp-old"}}}}
		kpss := map[Place]*fakeKPS{places[0]: {held: map[string]bool{"kp-old": true}}, places[1]: {held: map[string]bool{"kp-old": true}}}
		at := func(p Place) (*RetireAt, error) {
			return &RetireAt{Fleet: fleets[p], Keypairs: kpss[p], Region: cmp.Or(p.Region, "cn-north-4"), ProjectID: cmp.Or(p.ProjectID, "p1")}, nil
		}
		got, err := Retire(ctx, s, at, "g", RetireOptions{}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Places) != 2 || got.Places[0].Rotation != "g.1" || got.Places[0].Region != "cn-north-4" || len(got.Places[0].Deleted) != 1 ||
			got.Places[1].ProjectID != "p2" || len(got.Places[1].Kept) != 1 {
			t.Fatalf("group retire: %+v, %+v", got.Places[0], got.Places[1])
		}
		if kpss[places[0]].held["kp-old"] || !kpss[places[1]].held["kp-old"] {
			t.Errorf("KPS holds %v and %v; want kp-old gone from p1 only", kpss[places[0]].held, kpss[places[1]].held)
		}
		for i, id := range g.Parts {
			if rp := mustRotation(t, s, id).Retired; rp == nil || rp.ProjectID != got.Places[i].ProjectID {
				t.Errorf("part %s stored %+v", id, rp)
			}
		}
	})
}
