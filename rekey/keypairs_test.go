package rekey_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

// The pre-flight refuses a keypair KPS does not hold, naming it and the
// project, before anything is read or written; SkipKeypairCheck lets the
// rotation through.
func TestKeypairPreflight(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 10, NoWorker: true, Keypairs: []string{rekeytest.FleetKeypair, "kp-new"}})
	ctx := context.Background()
	ts := env.Targets()
	withOwn := append([]rekey.Target(nil), ts...)
	withOwn[3].Keypair = "kp-gone"
	tests := []struct {
		name    string
		req     rekey.Request
		missing []string
	}{
		{"missing", rekey.Request{Keypair: "kp-typo", Targets: ts}, []string{"kp-typo"}},
		{"a target's own keypair missing", rekey.Request{Keypair: "kp-new", Targets: withOwn}, []string{"kp-gone"}},
		{"present", rekey.Request{Keypair: "kp-new", Targets: ts}, nil},
		{"skipped", rekey.Request{Keypair: "kp-typo", Targets: ts, SkipKeypairCheck: true}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := env.Calls()["ListServers"]
			_, err := env.Client.Plan(ctx, tt.req)
			if tt.missing == nil {
				if err != nil {
					t.Fatalf("Plan: %v", err)
				}
				return
			}
			var ie *rekey.InputError
			var me *rekey.MissingKeypairError
			if !errors.As(err, &ie) || !errors.As(err, &me) {
				t.Fatalf("Plan = %v (%T), want an *InputError with a *MissingKeypairError", err, err)
			}
			var got []string
			for _, m := range me.Missing {
				if m.ProjectID != rekeytest.ProjectID {
					t.Errorf("%s missing in project %s, want %s", m.Keypair, m.ProjectID, rekeytest.ProjectID)
				}
				got = append(got, m.Keypair)
			}
			if strings.Join(got, ",") != strings.Join(tt.missing, ",") {
				t.Errorf("missing %v, want %v", got, tt.missing)
			}
			if !strings.Contains(err.Error(), tt.missing[0]) || !strings.Contains(err.Error(), rekeytest.ProjectID) {
				t.Errorf("error %q names neither the keypair nor the project", err)
			}
			if n := env.Calls()["ListServers"] - before; n != 0 {
				t.Errorf("the refused plan read %d pages of the fleet", n)
			}
		})
	}
	if _, err := env.Client.Start(ctx, rekey.Request{Keypair: "kp-typo", Targets: ts}); err == nil {
		t.Fatal("Start accepted a missing keypair")
	}
	if rots, err := env.Client.Rotations(ctx, 10); err != nil || len(rots) != 0 {
		t.Errorf("after the refused start: %d rotations (%v), want none", len(rots), err)
	}
	if n := env.Calls()["UpdateKeypair"]; n != 0 {
		t.Errorf("UpdateKeypair called %d times", n)
	}
}
