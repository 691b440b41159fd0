package rekey_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

// The old keypair is kept while a server outside the rotation is on it,
// and deleted once none is; from then on the rotation cannot be rolled
// back, and a second retire changes nothing.
func TestRetire(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 8})
	ctx := context.Background()
	ts := env.Targets()
	first := rotate(t, env, rekey.Request{ID: "first", Keypair: "kp-new", Targets: ts[:7]})
	if _, err := env.Client.Retire(ctx, "missing", rekey.RetireOptions{}); !errors.Is(err, rekey.ErrNotFound) {
		t.Errorf("Retire of no rotation = %v, want ErrNotFound", err)
	}

	r, err := env.Client.Retire(ctx, first, rekey.RetireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := r.Places[0]
	if len(p.Deleted) != 0 || len(p.Kept) != 1 || p.Kept[0].Keypair != rekeytest.FleetKeypair || p.Kept[0].Servers != 1 ||
		p.Kept[0].Sample[0] != ts[7].ServerID || p.ProjectID != rekeytest.ProjectID {
		t.Fatalf("retire while %s is still on the old keypair: %+v", ts[7].ServerID, p)
	}
	if _, err := env.Client.RollbackRequest(ctx, first, rekey.Request{}); err != nil {
		t.Errorf("rollback after a retire that deleted nothing: %v", err)
	}

	rotate(t, env, rekey.Request{ID: "last", Keypair: "kp-new", Targets: ts[7:]})
	dry, err := env.Client.Retire(ctx, first, rekey.RetireOptions{DryRun: true})
	if err != nil || len(dry.Places[0].Deleted) != 1 {
		t.Fatalf("dry run = %+v, %v; want the old keypair to delete", dry, err)
	}
	if rot, _ := env.Client.Rotation(ctx, first); len(rot.Retired.Places[0].Deleted) != 0 {
		t.Errorf("the dry run was stored: %+v", rot.Retired)
	}
	r, err = env.Client.Retire(ctx, first, rekey.RetireOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if d := r.Places[0].Deleted; len(d) != 1 || d[0].Keypair != rekeytest.FleetKeypair || d[0].AlreadyGone {
		t.Fatalf("deleted %+v, want the old keypair", d)
	}
	rot, err := env.Client.Rotation(ctx, first)
	if err != nil || rot.Retired == nil || len(rot.Retired.Places[0].Deleted) != 1 {
		t.Fatalf("rotation's retire: %+v, %v", rot, err)
	}
	_, err = env.Client.Rollback(ctx, first, rekey.Request{})
	var ie *rekey.InputError
	if !errors.As(err, &ie) || !strings.Contains(err.Error(), "retired") || !strings.Contains(err.Error(), rekeytest.FleetKeypair) {
		t.Errorf("Rollback after the retire = %v, want an *InputError naming the deleted keypair", err)
	}
	r, err = env.Client.Retire(ctx, first, rekey.RetireOptions{})
	if err != nil || len(r.Places[0].Deleted) != 1 || r.Places[0].Deleted[0].AlreadyGone {
		t.Errorf("second retire = %+v, %v; want the keypair deleted, by the first", r, err)
	}
}

// A scheduled retire is enqueued once and run by the worker, which stores
// its outcome with the rotation.
func TestScheduleRetire(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 4})
	ctx := context.Background()
	id := rotate(t, env, rekey.Request{Keypair: "kp-new", Targets: env.Targets()})
	if _, err := env.Client.ScheduleRetire(ctx, id, 0, rekey.RetireOptions{}); err == nil {
		t.Error("a zero delay was accepted")
	}
	s, err := env.Client.ScheduleRetire(ctx, id, 300*time.Millisecond, rekey.RetireOptions{})
	if err != nil || !s.Scheduled || s.TaskID != "retire-"+id {
		t.Fatalf("ScheduleRetire = %+v, %v", s, err)
	}
	again, err := env.Client.ScheduleRetire(ctx, id, time.Hour, rekey.RetireOptions{})
	if err != nil || again.Scheduled || !again.Due.Equal(s.Due) {
		t.Fatalf("second ScheduleRetire = %+v, %v; want the first one, due %v", again, err, s.Due)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		rot, err := env.Client.Rotation(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if rot.Retired != nil {
			if d := rot.Retired.Places[0].Deleted; len(d) != 1 || d[0].Keypair != rekeytest.FleetKeypair || !rot.RetireDue.IsZero() {
				t.Fatalf("the worker's retire: %+v, due %v", rot.Retired.Places[0], rot.RetireDue)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no retire outcome after 30s (error %q)", rot.RetireError)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// rotate starts r and waits for it to succeed; it returns its id.
func rotate(t *testing.T, env *rekeytest.Env, r rekey.Request) string {
	t.Helper()
	ctx := context.Background()
	st, err := env.Client.Start(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	rot, err := env.Client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 20 * time.Millisecond})
	if err != nil || rot.State != rekey.StateSucceeded {
		t.Fatalf("rotation %s: %v, %v", st.Rotation.ID, rot, err)
	}
	return rot.ID
}
