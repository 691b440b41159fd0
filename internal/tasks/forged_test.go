package tasks

import (
	"context"
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
