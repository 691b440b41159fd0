// Package rotationtool stands for a fleet-rotation tool that uses
// cph-rekey's Go client; only its test is here.
package rotationtool_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

func TestRotateFleet(t *testing.T) {
	env := rekeytest.New(t, rekeytest.Options{Servers: 250, JobFailRate: 0.05})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// The tool's own list, as a file would give it.
	var list strings.Builder
	for _, tg := range env.Targets() {
		list.WriteString(tg.ServerID + "\n")
	}
	targets, err := rekey.ParseTargets(strings.NewReader(list.String()), rekey.FormatAuto)
	if err != nil {
		t.Fatal(err)
	}
	st, err := env.Client.Start(ctx, rekey.Request{
		Keypair: "kp-tool",
		Targets: targets,
		Waves:   []rekey.Size{rekey.Servers(5), rekey.Percent(100)},
	})
	if err != nil {
		t.Fatal(err)
	}
	rot, err := env.Client.Wait(ctx, st.Rotation.ID, rekey.WaitOptions{Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rot.State != rekey.StateSucceeded || rot.Counts.Succeeded != 250 {
		t.Fatalf("rotation ended %s: %+v", rot.State, rot.Counts)
	}

	rows := 0
	err = env.Client.Report(ctx, rot.ID, func(r rekey.Row) error {
		rows++
		if kp, _ := env.Keypair(r.ServerID); r.Outcome != rekey.OutcomeSucceeded || kp != "kp-tool" || r.Version != rekey.ReportRowVersion {
			t.Errorf("row %+v; the simulator has %s on %q", r, r.ServerID, kp)
		}
		return nil
	})
	if err != nil || rows != 250 {
		t.Fatalf("report: %d rows, %v", rows, err)
	}

	e, err := env.Event(ctx, rot.ID)
	if err != nil {
		t.Fatal(err)
	}
	if e.Version != rekey.EventVersion || e.State != rekey.StateSucceeded || e.Counts != rot.Counts {
		t.Fatalf("completion event %+v", e)
	}

	if _, err := env.Client.Rotation(ctx, "r-not-there"); !errors.Is(err, rekey.ErrNotFound) {
		t.Fatalf("missing rotation: %v", err)
	}
}
