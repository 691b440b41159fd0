package tasks

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

var (
	north = Place{Region: "cn-north-4", ProjectID: "0123456789abcdef0123456789abcdef"}
	east  = Place{Region: "cn-east-3", ProjectID: "fedcba9876543210fedcba9876543210"}
)

func placed(p Place, ids ...string) []Target {
	var ts []Target
	for _, id := range ids {
		ts = append(ts, Target{ServerID: id, Place: p})
	}
	return ts
}

func TestSplitPlaces(t *testing.T) {
	base := Spec{Keypair: "kp-new", ChunkSize: 100, MaxAttempts: 3}

	one := base
	one.Targets = placed(Place{}, "a", "b")
	group, parts, err := SplitPlaces(one)
	if err != nil || group != "" || len(parts) != 1 || !parts[0].Place.IsZero() {
		t.Fatalf("SplitPlaces(one place) = %q, %+v, %v; want the spec itself, no group", group, parts, err)
	}
	if parts[0].Fingerprint() != one.Fingerprint() {
		t.Errorf("a spec of the default place changed its fingerprint, and so its rotation's id")
	}

	many := base
	many.Targets = slices.Concat(placed(north, "a", "b"), placed(Place{}, "a"), placed(east, "c"), placed(north, "d"))
	group, parts, err = SplitPlaces(many)
	if err != nil {
		t.Fatal(err)
	}
	if group != "r-"+many.Fingerprint()[:16] {
		t.Errorf("group %q, want the id derived from the spec's fingerprint", group)
	}
	want := []struct {
		place Place
		ids   []string
	}{{north, []string{"a", "b", "d"}}, {Place{}, []string{"a"}}, {east, []string{"c"}}}
	if len(parts) != len(want) {
		t.Fatalf("%d parts, want %d", len(parts), len(want))
	}
	for i, w := range want {
		p := parts[i]
		var ids []string
		for _, tg := range p.Targets {
			ids = append(ids, tg.ServerID)
		}
		if p.Place != w.place || p.Group != group || p.ID != PartID(group, i+1) || !slices.Equal(ids, w.ids) {
			t.Errorf("part %d = %s %s %s %v, want %s %s %s %v", i+1, p.ID, p.Group, p.Place, ids, PartID(group, i+1), group, w.place, w.ids)
		}
		if err := p.validate(); err != nil {
			t.Errorf("part %d: %v", i+1, err)
		}
	}

	long := many
	long.ID = strings.Repeat("x", 63)
	if _, _, err := SplitPlaces(long); err == nil {
		t.Error("SplitPlaces accepted a group id whose parts' ids are over 64 bytes")
	}
	mixed := many
	mixed.Place = north
	if err := mixed.validate(); err == nil {
		t.Error("a spec with targets in other places than its own validated")
	}
}

// recordingAPI accepts every UpdateKeypair and remembers the servers.
type recordingAPI struct {
	failOnceAPI
	mu   sync.Mutex
	sent []string
}

func (a *recordingAPI) UpdateKeypair(_ context.Context, s []cph.ServerKeypair) (*cph.UpdateKeypairResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	resp := &cph.UpdateKeypairResponse{RequestID: "req"}
	for _, k := range s {
		a.sent = append(a.sent, k.ServerID)
		resp.Jobs = append(resp.Jobs, cph.ServerJob{ServerID: k.ServerID, JobID: "job-" + k.ServerID})
	}
	return resp, nil
}

// TestSubmitCallsThePlacesAPI: each part of a group is submitted through
// its own place's API, and the report names each server's place.
func TestSubmitCallsThePlacesAPI(t *testing.T) {
	ctx := context.Background()
	rdb := testredis.Mini(t).Client(t)
	store := NewStore(rdb, "")
	enq := asynq.NewClientFromRedisClient(rdb)
	group, parts, err := SplitPlaces(Spec{Keypair: "kp-new", ChunkSize: 100, MaxAttempts: 3,
		Targets: slices.Concat(placed(north, "a", "b"), placed(east, "a", "c"))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := store.CreateGroup(ctx, &Group{ID: group, Fingerprint: "fp", Parts: []string{parts[0].ID, parts[1].ID}, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for _, s := range parts {
		plan, err := MakePlan(ctx, s, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Start(ctx, store, enq, plan, TaskOptions{}, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	apis := map[Place]*recordingAPI{north: {}, east: {}}
	var asked []Place
	h := NewHandler(HandlerOptions{Store: store, Enqueuer: enq, Places: func(p Place) (API, Limiter) {
		asked = append(asked, p)
		return apis[p], allow{}
	}})
	for _, s := range parts {
		data, err := marshal(SubmitPayload{Rotation: s.ID, Batch: 1, Servers: 2})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.HandleSubmit(ctx, asynq.NewTask(TypeSubmit, data)); err != nil {
			t.Fatalf("submit %s: %v", s.ID, err)
		}
	}
	if got := apis[north].sent; !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("%s's API was sent %v, want a and b", north, got)
	}
	if got := apis[east].sent; !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("%s's API was sent %v, want a and c", east, got)
	}
	if slices.Contains(asked, Place{}) {
		t.Errorf("the default place was asked for: %v", asked)
	}
	var rows []string
	if err := store.Report(ctx, group, func(r ReportRow) error {
		rows = append(rows, r.ServerID+"@"+r.Region+"/"+r.ProjectID)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []string{"a@" + north.Region + "/" + north.ProjectID, "b@" + north.Region + "/" + north.ProjectID,
		"a@" + east.Region + "/" + east.ProjectID, "c@" + east.Region + "/" + east.ProjectID}
	if !slices.Equal(rows, want) {
		t.Errorf("group report %v, want %v", rows, want)
	}
	if created, err := store.CreateGroup(ctx, &Group{ID: group, Fingerprint: "other"}); err == nil || created {
		t.Errorf("CreateGroup with another fingerprint = %t, %v; want ErrConflict", created, err)
	}
}
