package tasks

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/kps"
)

// A job failing because the target keypair does not exist halts the
// rotation at once, naming the keypair: the canary wave's failure keeps
// the next wave from being submitted, though the error budget allows it,
// and no server is tried twice.
func TestMissingKeypairHalts(t *testing.T) {
	e := newGated(t, 10)
	kc, err := kps.NewClient(kps.Config{Endpoint: e.url, ProjectID: gateProject,
		Credentials: cph.Credentials{AccessKey: gateAK, SecretKey: gateSK}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := kc.Delete(ctx, "kp-new"); err != nil {
		t.Fatal(err)
	}
	var ts []Target
	for _, s := range e.gate.sim.Servers() {
		ts = append(ts, Target{ServerID: s.ServerID})
	}
	budget := Size{N: 100, Percent: true}
	plan, err := MakePlan(ctx, Spec{ID: "r1", Keypair: "kp-new", Targets: ts, ChunkSize: 1, MaxAttempts: 3,
		Waves: []Size{{N: 1}}, MaxErrors: &budget}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Start(ctx, e.store, e.enq, plan, e.opts, time.Now()); err != nil {
		t.Fatal(err)
	}
	rot := e.until(t, "r1", 30*time.Second, "halted or finished", func(r *Rotation) bool { return r.Halted() || r.Finished() })
	if !strings.Contains(rot.Reason, "keypair kp-new does not exist") || !strings.Contains(rot.Reason, cphsim.JobCodeKeypairNotFound) {
		t.Errorf("reason %q names neither the keypair nor the code", rot.Reason)
	}
	// The halted rotation's in-flight work settles; nothing new is sent.
	time.Sleep(time.Second)
	rot, err = e.store.Rotation(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if rot.Counts.Failed != 1 || rot.Counts.Submitted != 1 || !rot.Halted() {
		t.Errorf("after the halt: state %s, counts %+v; want halted with the canary submitted and failed", rot.State, rot.Counts)
	}
	submitted := 0
	for _, s := range e.gate.sim.Servers() {
		n := e.gate.sim.SubmitCount(s.ServerID)
		if n > 1 {
			t.Errorf("server %s submitted %d times", s.ServerID, n)
		}
		submitted += n
	}
	if submitted != 1 {
		t.Errorf("%d servers submitted, want only the canary", submitted)
	}
}
