package rekey_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

const projSouth = "22222222222222222222222222222222"

// waitFor reads rotation id until cond holds of it, for up to a minute
// (a bound against hanging, not a speed check).
func waitFor(t *testing.T, c *rekey.Client, id, what string, cond func(*rekey.Rotation) bool) *rekey.Rotation {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		rot, err := c.Rotation(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(rot) {
			return rot
		}
		if time.Now().After(deadline) {
			var b strings.Builder
			for _, p := range rot.Parts {
				b.WriteString("\n  " + p.ID + " " + p.Region + " " + string(p.State) + " " + p.Reason)
			}
			t.Fatalf("after a minute, not %s: rotation %s %s%s", what, rot.State, rot.Reason, b.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// settled: every part has finished, or is halted with nothing in flight.
func settled(r *rekey.Rotation) bool {
	for _, p := range r.Parts {
		if !p.Finished() && !(p.Halted() && p.Counts.Running == 0) {
			return false
		}
	}
	return true
}

// threeRegions is a rotation's environment over three places: the
// default one, cn-east-3 where half the servers always fail (two
// UpdateKeypair a second), and a slow ap-southeast-1 (one a second),
// still running when cn-east-3 goes past its budget.
func threeRegions(t *testing.T) *rekeytest.Env {
	return rekeytest.New(t, rekeytest.Options{Servers: 20, Regions: []rekeytest.Region{
		{Name: "cn-east-3", ProjectID: projEast, Servers: 40, BadServerRate: 0.5, UpdateKeypairQuota: 2},
		{Name: "ap-southeast-1", ProjectID: projSouth, Servers: 60, UpdateKeypairQuota: 1},
	}})
}

// TestRegionHaltHaltsAll: under the default policy (HaltAll, as StackSets
// do), a part past its own budget halts every part still running; a resume
// of the whole is refused while that part is still past its budget, and
// with a larger one resumes them all to the end.
func TestRegionHaltHaltsAll(t *testing.T) {
	t.Parallel()
	env := threeRegions(t)
	// A rotation that never finishes fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	two := rekey.Servers(2)
	st, err := env.Client.Start(ctx, rekey.Request{Keypair: "kp-new", Targets: env.Targets(), ChunkSize: 5, MaxErrors: &two})
	if err != nil {
		t.Fatal(err)
	}
	if st.Rotation.OnRegionHalt != rekey.HaltAll {
		t.Fatalf("policy %q, want the default %q", st.Rotation.OnRegionHalt, rekey.HaltAll)
	}
	rot := waitFor(t, env.Client, st.Rotation.ID, "settled with cn-east-3 failed", func(r *rekey.Rotation) bool {
		return r.Parts[1].State == rekey.StateFailed && settled(r)
	})
	east, south := rot.Parts[1], rot.Parts[2]
	if !strings.HasPrefix(east.Reason, "error budget exceeded") {
		t.Errorf("cn-east-3 halted with %q, want its own budget", east.Reason)
	}
	if !south.Halted() || !strings.Contains(south.Reason, east.ID) || south.Counts.Pending == 0 {
		t.Fatalf("ap-southeast-1 %s %q %+v: want it halted with cn-east-3, servers left", south.State, south.Reason, south.Counts)
	}
	if rot.State != rekey.StateFailed || !rot.Halted() || !strings.Contains(rot.Reason, east.ID) {
		t.Fatalf("rotation %s %q: want it halted, naming %s", rot.State, rot.Reason, east.ID)
	}
	// Nothing is submitted while halted.
	calls := env.CallsIn("ap-southeast-1")["UpdateKeypair"]
	time.Sleep(1500 * time.Millisecond)
	if n := env.CallsIn("ap-southeast-1")["UpdateKeypair"]; n != calls {
		t.Fatalf("ap-southeast-1 made %d UpdateKeypair calls while halted", n-calls)
	}
	// A part halted with the whole is not resumed alone: the next look at
	// the group would halt it again.
	_, err = env.Client.Resume(ctx, south.ID, rekey.ResumeOptions{})
	var ie *rekey.InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), st.Rotation.ID+", the whole rotation") {
		t.Fatalf("resume of the part %s alone: %v, want an InputError naming the whole rotation", south.ID, err)
	}

	if east.Halted() {
		// It may also have ended, every server of it submitted before the
		// halt: then there is nothing of it to resume.
		_, err = env.Client.Resume(ctx, st.Rotation.ID, rekey.ResumeOptions{})
		if !errors.As(err, &ie) || !strings.Contains(err.Error(), east.ID) {
			t.Fatalf("resume within cn-east-3's exceeded budget: %v, want an InputError naming it", err)
		}
		if r, _ := env.Client.Rotation(ctx, south.ID); !r.Halted() {
			t.Fatalf("a refused resume resumed %s (%s)", south.ID, r.State)
		}
	}
	all := rekey.Percent(100)
	if _, err := env.Client.Resume(ctx, st.Rotation.ID, rekey.ResumeOptions{MaxErrors: &all}); err != nil {
		t.Fatal(err)
	}
	rot, err = env.Client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rot.State != rekey.StateCompletedWithErrors || rot.Parts[2].State != rekey.StateSucceeded || rot.Counts.Succeeded+rot.Counts.Failed != 120 {
		t.Fatalf("after the resume: %s %+v, ap-southeast-1 %s", rot.State, rot.Counts, rot.Parts[2].State)
	}
}

// TestRegionHaltContinue: with ContinueOthers a part past its budget
// halts alone, and the others finish.
func TestRegionHaltContinue(t *testing.T) {
	t.Parallel()
	env := threeRegions(t)
	// A rotation that never finishes fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	two := rekey.Servers(2)
	st, err := env.Client.Start(ctx, rekey.Request{Keypair: "kp-new", Targets: env.Targets(), ChunkSize: 5, MaxErrors: &two,
		OnRegionHalt: rekey.ContinueOthers})
	if err != nil {
		t.Fatal(err)
	}
	rot := waitFor(t, env.Client, st.Rotation.ID, "settled", settled)
	def, east, south := rot.Parts[0], rot.Parts[1], rot.Parts[2]
	if east.State != rekey.StateFailed || def.State != rekey.StateSucceeded || south.State != rekey.StateSucceeded {
		t.Fatalf("parts %s, %s, %s: want cn-east-3 halted alone and the others succeeded", def.State, east.State, south.State)
	}
	if rot.State != rekey.StateFailed {
		t.Fatalf("rotation %s, want failed (halted) while cn-east-3 is", rot.State)
	}
}

// TestRotationWideBudget: MaxErrorsTotal halts every part once the
// failures across them go beyond it, though no part is past its own; a
// resume with a larger one runs them to the end, and the rotation sends
// one completion event as a whole, besides each part's.
func TestRotationWideBudget(t *testing.T) {
	t.Parallel()
	env := threeRegions(t)
	// A rotation that never finishes fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	all, three := rekey.Percent(100), rekey.Servers(3)
	st, err := env.Client.Start(ctx, rekey.Request{Keypair: "kp-new", Targets: env.Targets(), ChunkSize: 5,
		MaxErrors: &all, MaxErrorsTotal: &three})
	if err != nil {
		t.Fatal(err)
	}
	if st.Rotation.MaxErrorsTotal != 3 {
		t.Fatalf("rotation-wide budget %d, want 3", st.Rotation.MaxErrorsTotal)
	}
	rot := waitFor(t, env.Client, st.Rotation.ID, "halted by its rotation-wide budget", func(r *rekey.Rotation) bool {
		return r.Halted() && strings.HasPrefix(r.Reason, "rotation-wide error budget exceeded") && settled(r)
	})
	for _, p := range rot.Parts {
		if p.Finished() {
			continue
		}
		if !p.Halted() || !strings.Contains(p.Reason, "rotation-wide error budget exceeded") {
			t.Errorf("part %s %s %q: want it halted by the rotation-wide budget", p.ID, p.State, p.Reason)
		}
	}
	if rot.Parts[2].Finished() {
		t.Fatal("ap-southeast-1 finished before the budget halted the rotation: nothing shown")
	}
	if _, err := env.Client.Resume(ctx, st.Rotation.ID, rekey.ResumeOptions{}); err == nil || !strings.Contains(err.Error(), "--max-errors-total") {
		t.Fatalf("resume within the exceeded rotation-wide budget: %v, want it refused", err)
	}
	if _, err := env.Client.Resume(ctx, st.Rotation.ID, rekey.ResumeOptions{MaxErrorsTotal: &all}); err != nil {
		t.Fatal(err)
	}
	rot, err = env.Client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("after the resume: %v; the rotation: %+v", err, rot)
	}
	if rot.State != rekey.StateCompletedWithErrors || rot.MaxErrorsTotal != 120 {
		t.Fatalf("after the resume: %s, budget %d", rot.State, rot.MaxErrorsTotal)
	}

	// The events: one a part, and one of the whole naming the parts, as
	// docs/schema describes it.
	eventSchema, eventProps := schema(t, "event.v1.json")
	insp := asynq.NewInspectorFromRedisClient(env.Redis)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var whole []*rekey.Event
		var payload []byte
		parts := 0
		tasks, err := insp.ListPendingTasks(rekey.EventQueue, asynq.PageSize(100))
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range tasks {
			e, err := rekey.DecodeEvent(task.Payload)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case e.Rotation == st.Rotation.ID:
				whole, payload = append(whole, e), task.Payload
			case e.Group == st.Rotation.ID:
				parts++
			}
		}
		if len(whole) > 1 {
			t.Fatalf("%d events of the whole rotation, want one", len(whole))
		}
		if len(whole) == 1 && parts == 3 {
			e := whole[0]
			if e.State != rot.State || e.Counts != rot.Counts || len(e.Parts) != 3 || e.Parts[1].Region != "cn-east-3" ||
				e.Parts[1].Counts != rot.Parts[1].Counts || e.Group != "" {
				t.Fatalf("the rotation's event %+v, want its end %s %+v with its three parts", e, rot.State, rot.Counts)
			}
			validate(t, eventSchema, eventProps, payload)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("events: %d of the whole, %d of parts; want 1 and 3", len(whole), parts)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestGroupWhosePartEndsAtOnce: a part whose servers are all on the
// keypair already ends as it is written; the part waiting behind it
// (MaxConcurrentRegions 1) starts all the same, and the rotation sends
// its event once the last part ends.
func TestGroupWhosePartEndsAtOnce(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 10, Regions: []rekeytest.Region{
		{Name: "cn-east-3", ProjectID: projEast, Servers: 10},
	}})
	// A rotation that never finishes fails the test instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	targets := env.Targets()
	for i := range targets {
		if targets[i].Region == "" {
			targets[i].Keypair = rekeytest.FleetKeypair // nothing to change
		}
	}
	st, err := env.Client.Start(ctx, rekey.Request{Keypair: "kp-new", Targets: targets, MaxConcurrentRegions: 1})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := env.Client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rot.State != rekey.StateSucceeded || rot.Parts[0].Counts.Skipped != 10 || rot.Parts[1].Counts.Succeeded != 10 {
		t.Fatalf("rotation %s, parts %+v and %+v: want the first skipped whole and the second rotated", rot.State, rot.Parts[0].Counts, rot.Parts[1].Counts)
	}
	e, err := env.Event(ctx, st.Rotation.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Parts) != 2 || e.State != rekey.StateSucceeded {
		t.Fatalf("the rotation's event %+v: want it succeeded with its two parts", e)
	}
}
