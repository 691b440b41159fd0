package rekey_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

const (
	projNorth = "0123456789abcdef0123456789abcdef"
	projEast  = "fedcba9876543210fedcba9876543210"
)

func placedTargets(region, project string, n int) []rekey.Target {
	var ts []rekey.Target
	for i := range n {
		ts = append(ts, rekey.Target{ServerID: fmt.Sprintf("%s-%d", region, i), Region: region, ProjectID: project})
	}
	return ts
}

// TestRotationAcrossPlaces: targets in two places start one rotation of
// two parts, read, paused, resumed and cancelled as one, and each part
// alone by its own id.
func TestRotationAcrossPlaces(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		c := offline(t, r)
		ctx := context.Background()
		req := rekey.Request{ID: "fleet", Keypair: "kp-new", NoSkipMatching: true, ChunkSize: 10,
			Targets: append(placedTargets("cn-north-4", projNorth, 30), placedTargets("cn-east-3", projEast, 20)...)}
		plan, err := c.Plan(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		if len(plan.Parts) != 2 || plan.Targets != 50 || plan.Chunks != 5 || plan.Parts[1].Region != "cn-east-3" || plan.Parts[1].ProjectID != projEast {
			t.Fatalf("plan %+v: want two parts, cn-north-4's 3 chunks and cn-east-3's 2", plan)
		}
		st, err := c.Start(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		rot := st.Rotation
		if rot.ID != "fleet" || !st.Created || rot.Counts.Total != 50 || rot.State != rekey.StateRunning || len(rot.Parts) != 2 {
			t.Fatalf("started %+v", rot)
		}
		if p := rot.Parts[0]; p.ID != "fleet.1" || p.Group != "fleet" || p.Region != "cn-north-4" || p.Counts.Total != 30 {
			t.Fatalf("part 1 = %+v", p)
		}
		if again, err := c.Start(ctx, req); err != nil || again.Created || again.Enqueued != 0 {
			t.Fatalf("start again = %+v, %v; want nothing new", again, err)
		}
		other := req
		other.Targets = other.Targets[1:]
		if _, err := c.Start(ctx, other); !errors.Is(err, rekey.ErrConflict) {
			t.Fatalf("another fleet under the same id: %v, want ErrConflict", err)
		}

		// One part alone, then the whole.
		if err := c.Pause(ctx, "fleet.2"); err != nil {
			t.Fatal(err)
		}
		if rot, _ := c.Rotation(ctx, "fleet"); rot.State != rekey.StateRunning || rot.Parts[1].State != rekey.StatePaused {
			t.Fatalf("after pausing part 2: %s, parts %s and %s; want running with part 2 paused", rot.State, rot.Parts[0].State, rot.Parts[1].State)
		}
		if err := c.Pause(ctx, "fleet"); err != nil {
			t.Fatal(err)
		}
		if rot, _ := c.Rotation(ctx, "fleet"); rot.State != rekey.StatePaused {
			t.Fatalf("state %s after pausing the rotation", rot.State)
		}
		res, err := c.Resume(ctx, "fleet", rekey.ResumeOptions{})
		if err != nil || res.Rotation.State != rekey.StateRunning {
			t.Fatalf("Resume = %+v, %v", res, err)
		}
		can, err := c.Cancel(ctx, "fleet")
		if err != nil || can.Closed != 50 || can.Rotation.State != rekey.StateCancelled || !can.Rotation.Finished() {
			t.Fatalf("Cancel = %+v, %v; want both parts cancelled", can, err)
		}
		var rows []string
		if err := c.Report(ctx, "fleet", func(r rekey.Row) error {
			rows = append(rows, r.Region)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if len(rows) != 50 || rows[0] != "cn-north-4" || rows[49] != "cn-east-3" {
			t.Fatalf("report regions %v", rows)
		}
		// The history is the parts' together, in time order, each entry
		// naming its part.
		hist, err := c.History(ctx, "fleet")
		if err != nil {
			t.Fatal(err)
		}
		kinds := map[string]int{}
		for i, h := range hist {
			if h.Rotation != "fleet.1" && h.Rotation != "fleet.2" || i > 0 && h.At.Before(hist[i-1].At) {
				t.Fatalf("entry %d %+v: want a part's, in time order", i, h)
			}
			kinds[h.Rotation+" "+string(h.Kind)]++
		}
		for _, k := range []string{"fleet.1 created", "fleet.2 created", "fleet.1 cancelled", "fleet.2 cancelled", "fleet.2 finished"} {
			if kinds[k] != 1 {
				t.Errorf("%d entries %q in the history, want 1: %v", kinds[k], k, kinds)
			}
		}
		if kinds["fleet.2 paused"] != 1 {
			t.Errorf("part 2 paused alone, then with the rotation: %d entries, want 1 (pausing a paused part adds none)", kinds["fleet.2 paused"])
		}
	})
}

// TestTokenRefusedAcrossProjects: an IAM token or a security token is
// scoped to one project, so a rotation spanning two is refused before
// anything is written.
func TestTokenRefusedAcrossProjects(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		c, err := rekey.NewClient(r.Client(t), rekey.Options{CPH: &rekey.CPH{Region: "cn-north-4", ProjectID: projNorth,
			AccessKey: "AK", SecretKey: "SK", SecurityToken: "token"}})
		if err != nil {
			t.Fatal(err)
		}
		req := rekey.Request{Keypair: "kp-new", Targets: append(placedTargets("cn-north-4", projNorth, 1), placedTargets("cn-north-4", projEast, 1)...)}
		var ie *rekey.InputError
		if _, err := c.Start(context.Background(), req); !errors.As(err, &ie) || !strings.Contains(err.Error(), "scoped to one project") {
			t.Fatalf("Start across projects with a token: %v, want an *InputError saying why", err)
		}
	})
}

// TestRotationAcrossRegionsEnv: rekeytest's multi-region environment runs
// one rotation over its default place and two regions to the end; every
// server of every simulator is on the new keypair, each part sends its
// own event, and each simulator was called for its own servers only.
func TestRotationAcrossRegionsEnv(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 40, Regions: []rekeytest.Region{
		{Name: "cn-east-3", ProjectID: projEast, Servers: 30},
		{Name: "ap-southeast-1", ProjectID: projNorth, Servers: 20, UpdateKeypairQuota: 50},
	}})
	ctx := context.Background()
	st, err := env.Client.Start(ctx, rekey.Request{Keypair: "kp-new", Targets: env.Targets(), ChunkSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := env.Client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rot.State != rekey.StateSucceeded || rot.Counts.Succeeded != 90 || len(rot.Parts) != 3 {
		t.Fatalf("rotation ended %s %+v with %d parts; want 90 succeeded in 3 parts", rot.State, rot.Counts, len(rot.Parts))
	}
	for _, tg := range env.Targets() {
		if kp, _ := env.KeypairIn(tg.Region, tg.ServerID); kp != "kp-new" {
			t.Errorf("server %s in %q holds %q", tg.ServerID, tg.Region, kp)
		}
	}
	for i, region := range []string{"", "cn-east-3", "ap-southeast-1"} {
		if got, want := env.CallsIn(region)["UpdateKeypair"], []int{4, 3, 2}[i]; got != want {
			t.Errorf("%q: %d UpdateKeypair calls, want one a chunk of its own servers, %d", region, got, want)
		}
		e, err := env.Event(ctx, rot.Parts[i].ID)
		if err != nil || e.Group != rot.ID || e.Region != region || e.State != rekey.StateSucceeded {
			t.Errorf("event of part %d = %+v, %v", i+1, e, err)
		}
	}

	// The rollback puts every server of every place back.
	back, err := env.Client.Rollback(ctx, rot.ID, rekey.Request{ChunkSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	if rot, err = env.Client.Wait(ctx, back.Rotation.ID, rekey.WaitOptions{Interval: 50 * time.Millisecond}); err != nil || len(rot.Parts) != 3 || rot.State != rekey.StateSucceeded {
		t.Fatalf("rollback ended %+v, %v; want three parts succeeded", rot, err)
	}
	for _, tg := range env.Targets() {
		if kp, _ := env.KeypairIn(tg.Region, tg.ServerID); kp != rekeytest.FleetKeypair {
			t.Errorf("server %s in %q holds %q after the rollback", tg.ServerID, tg.Region, kp)
		}
	}
}

// TestRegionPastItsBudgetHaltsAlone: each part of a rotation across places
// has its own error budget; under ContinueOthers the part past it fails
// (halts), the others finish, and the rotation as a whole is failed.
func TestRegionPastItsBudgetHaltsAlone(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 40, Regions: []rekeytest.Region{
		{Name: "cn-east-3", ProjectID: projEast, Servers: 40, BadServerRate: 0.5},
		{Name: "ap-southeast-1", ProjectID: "22222222222222222222222222222222", Servers: 40},
	}})
	ctx := context.Background()
	two := rekey.Servers(2)
	st, err := env.Client.Start(ctx, rekey.Request{Keypair: "kp-new", Targets: env.Targets(), ChunkSize: 10, MaxErrors: &two,
		OnRegionHalt: rekey.ContinueOthers})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rot, err := env.Client.Rotation(ctx, st.Rotation.ID)
		if err != nil {
			t.Fatal(err)
		}
		def, east, south := rot.Parts[0], rot.Parts[1], rot.Parts[2]
		// Halted, or finished once its chunks in flight ended: failed.
		if def.Finished() && south.Finished() && east.State == rekey.StateFailed && east.Counts.Running == 0 {
			if def.State != rekey.StateSucceeded || south.State != rekey.StateSucceeded {
				t.Fatalf("the other regions ended %s and %s, want succeeded", def.State, south.State)
			}
			if rot.State != rekey.StateFailed || east.Counts.Failed < 3 {
				t.Fatalf("rotation %s, cn-east-3 %+v: want the rotation failed by cn-east-3 past its budget of 2", rot.State, east.Counts)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("parts %s %s %s after 30 s: want cn-east-3 halted and the others finished", def.State, east.State, south.State)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRegionsInOrderOneAtATime: RegionOrder puts a canary region first
// and MaxConcurrentRegions 1 runs one region at a time: each part
// waits for the one before it, and the workers start it themselves.
func TestRegionsInOrderOneAtATime(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 30, Regions: []rekeytest.Region{
		{Name: "cn-east-3", ProjectID: projEast, Servers: 20},
		{Name: "ap-southeast-1", ProjectID: "22222222222222222222222222222222", Servers: 20},
	}})
	ctx := context.Background()
	st, err := env.Client.Start(ctx, rekey.Request{Keypair: "kp-new", Targets: env.Targets(), ChunkSize: 10,
		RegionOrder: []string{"ap-southeast-1"}, MaxConcurrentRegions: 1})
	if err != nil {
		t.Fatal(err)
	}
	parts := st.Rotation.Parts
	if len(parts) != 3 || parts[0].Region != "ap-southeast-1" || parts[1].Region != "" || parts[2].Region != "cn-east-3" {
		t.Fatalf("parts in %s, %q, %s: want the canary region first, then the list's order", parts[0].Region, parts[1].Region, parts[2].Region)
	}
	if parts[1].State != rekey.StatePaused || parts[2].State != rekey.StatePaused {
		t.Fatalf("parts 2 and 3 %s and %s at the start: want them waiting", parts[1].State, parts[2].State)
	}
	// A pause and resume of the whole leaves the waiting parts waiting.
	if err := env.Client.Pause(ctx, st.Rotation.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := env.Client.Resume(ctx, st.Rotation.ID, rekey.ResumeOptions{}); err != nil {
		t.Fatal(err)
	}
	rot, err := env.Client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 20 * time.Millisecond, Progress: func(r *rekey.Rotation) error {
		running := 0
		for _, p := range r.Parts {
			if p.State == rekey.StateRunning && !p.Finished() {
				running++
			}
		}
		if running > 1 {
			return fmt.Errorf("%d parts running at once", running)
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if rot.State != rekey.StateSucceeded || rot.Counts.Succeeded != 70 {
		t.Fatalf("rotation ended %s %+v", rot.State, rot.Counts)
	}
	for i := 1; i < 3; i++ {
		if rot.Parts[i].CreatedAt.IsZero() || rot.Parts[i].FinishedAt.Before(rot.Parts[i-1].FinishedAt) {
			t.Errorf("part %d finished at %s, before part %d at %s", i+1, rot.Parts[i].FinishedAt, i, rot.Parts[i-1].FinishedAt)
		}
	}
}
