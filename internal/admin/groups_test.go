package admin

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/cph-rekey/cph-rekey/rekey"
)

// TestAPIShowsARotationAcrossRegionsAsOne: the list has a rotation across
// regions as one row with its parts, its page has the parts (a region and
// project each, with its own budget) and the whole's budget and policy,
// and a part is steered alone by its id.
func TestAPIShowsARotationAcrossRegionsAsOne(t *testing.T) {
	rig := newConsoleRig(t, Options{})
	ctx := context.Background()
	c := rekeyClient(t, rig.r.Client(t), "")
	var targets []rekey.Target
	for i := range 30 {
		targets = append(targets, rekey.Target{ServerID: fmt.Sprintf("n%02d", i)})
	}
	for i := range 20 {
		targets = append(targets, rekey.Target{ServerID: fmt.Sprintf("e%02d", i), Region: "cn-east-3", ProjectID: "fedcba9876543210fedcba9876543210"})
	}
	total := rekey.Servers(4)
	st, err := c.Start(ctx, rekey.Request{ID: "fleet", Keypair: "kp-new", NoSkipMatching: true, ChunkSize: 10, Targets: targets,
		MaxErrorsTotal: &total, OnRegionHalt: rekey.ContinueOthers})
	if err != nil {
		t.Fatal(err)
	}

	var list rotationList
	if code := getJSON(t, rig.base+APIPath, &list); code != http.StatusOK {
		t.Fatalf("list: %d", code)
	}
	if len(list.Rotations) != 2 || list.Total != 3 {
		t.Fatalf("list has %d rows of %d rotations, want the group as one row beside r-console, of 3 in the index", len(list.Rotations), list.Total)
	}
	g := list.Rotations[0]
	if g.ID != "fleet" || len(g.Parts) != 2 || g.Parts[1].Region != "cn-east-3" || g.Parts[1].Group != "fleet" ||
		g.Counts.Total != 50 || g.MaxErrorsTotal == nil || *g.MaxErrorsTotal != 4 {
		t.Fatalf("group row %+v: want fleet with its two parts, 50 servers, a budget of 4", g)
	}

	var d struct {
		rotationView
		Budget budgetView `json:"budget"`
	}
	if code := getJSON(t, rig.base+APIPath+"/fleet", &d); code != http.StatusOK {
		t.Fatalf("group page: %d", code)
	}
	if len(d.Parts) != 2 || d.Parts[0].MaxErrors != 3 || d.Parts[1].ProjectID != "fedcba9876543210fedcba9876543210" ||
		d.Budget.MaxErrors != 4 || d.OnRegionHalt != "continue" {
		t.Fatalf("group page %+v budget %+v: want two parts of 10%% budgets, the whole's budget 4, policy continue", d.rotationView, d.Budget)
	}

	part := st.Rotation.Parts[1].ID
	if code, msg := post(t, rig.base+APIPath+"/"+part+"/pause", ""); code != http.StatusOK {
		t.Fatalf("pause %s: %d %s", part, code, msg)
	}
	rot, err := c.Rotation(ctx, "fleet")
	if err != nil {
		t.Fatal(err)
	}
	if rot.Parts[0].State != rekey.StateRunning || rot.Parts[1].State != rekey.StatePaused {
		t.Fatalf("parts %s and %s: want only %s paused", rot.Parts[0].State, rot.Parts[1].State, part)
	}
	if code, msg := post(t, rig.base+APIPath+"/r-console/resume", `{"max_errors_total": "5"}`); code != http.StatusConflict {
		t.Fatalf("a rotation-wide budget for a rotation of one place: %d %s, want 409", code, msg)
	}
}
