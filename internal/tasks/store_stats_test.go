package tasks

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

func TestStatsCountFailuresByCodeAndOutcomesOverTime(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		controlled(t, s, "r1", []int{10}, nil, -1, false)
		var ids []string
		for i := range 10 {
			ids = append(ids, fmt.Sprintf("s%d", i))
		}
		checkpoint(t, s, "r1", 1, ids...)
		if st, err := s.Stats(ctx, "r1"); err != nil || len(st.Failures) != 0 || len(st.History) != 0 {
			t.Fatalf("stats before any outcome = %+v, %v; want empty", st, err)
		}
		t0 := time.Unix(1_800_000_000, 0)
		fail := func(code, msg string, ids ...string) []Resolution {
			rs := outcomes(OutcomeFailed, ids...)
			for i := range rs {
				rs[i].Code, rs[i].Message = code, msg
			}
			return rs
		}
		steps := []struct {
			rs []Resolution
			at time.Time
		}{
			{outcomes(OutcomeSucceeded, "s0", "s1"), t0},
			{fail("CPS.0001", "bad server", "s2", "s3", "s4", "s5"), t0.Add(time.Second)},
			{fail("CPS.0002", "gone", "s6"), t0.Add(25 * time.Second)},
			{outcomes(OutcomeSucceeded, "s7", "s8", "s9"), t0.Add(26 * time.Second)},
			{fail("CPS.0002", "again", "s6"), t0.Add(30 * time.Second)}, // recorded already: counts nothing
		}
		for _, st := range steps {
			if _, err := s.Resolve(ctx, "r1", 1, 1, st.rs, time.Time{}, true, st.at); err != nil {
				t.Fatal(err)
			}
		}
		st, err := s.Stats(ctx, "r1")
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Failures) != 2 {
			t.Fatalf("failures = %+v, want 2 codes", st.Failures)
		}
		top := st.Failures[0]
		if top.Code != "CPS.0001" || top.Count != 4 || len(top.Examples) != 3 {
			t.Fatalf("top failure = %+v, want CPS.0001 ×4 with 3 examples", top)
		}
		if ex := top.Examples[0]; ex.ErrorMsg != "bad server" || ex.Outcome != OutcomeFailed || ex.ServerID == "" {
			t.Fatalf("example = %+v", ex)
		}
		if f := st.Failures[1]; f.Code != "CPS.0002" || f.Count != 1 || len(f.Examples) != 1 || f.Examples[0].ServerID != "s6" || f.Examples[0].ErrorMsg != "gone" {
			t.Fatalf("second failure = %+v", f)
		}
		want := []Bucket{
			{Start: t0.Truncate(StatsBucket).UTC(), Ended: 6, Failed: 4},
			{Start: t0.Add(25 * time.Second).Truncate(StatsBucket).UTC(), Ended: 4, Failed: 1},
		}
		if fmt.Sprint(st.History) != fmt.Sprint(want) {
			t.Fatalf("history = %v, want %v", st.History, want)
		}
		many, err := s.StatsOf(ctx, []string{"r1", "r-none"})
		if err != nil || len(many) != 2 || fmt.Sprint(*many[0]) != fmt.Sprint(*st) || len(many[1].History) != 0 {
			t.Fatalf("StatsOf = %v, %v; want r1's stats and empty ones", many, err)
		}
		if none, err := s.StatsOf(ctx, nil); err != nil || len(none) != 0 {
			t.Fatalf("StatsOf(nil) = %v, %v", none, err)
		}
	})
}

func TestRotationsPage(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		s := NewStore(r.Client(t), "")
		for i := range 5 {
			rot := testRotation(fmt.Sprintf("r%d", i), [][]Entry{entries(fmt.Sprintf("s%d", i))})
			if _, err := s.Create(ctx, rot, [][]Entry{entries(fmt.Sprintf("s%d", i))}, nil, time.Unix(int64(1000+i), 0)); err != nil {
				t.Fatal(err)
			}
		}
		rots, total, err := s.RotationsPage(ctx, 1, 2)
		if err != nil {
			t.Fatal(err)
		}
		if total != 5 || len(rots) != 2 || rots[0].ID != "r3" || rots[1].ID != "r2" {
			t.Fatalf("page = %d of %d: %v %v", len(rots), total, rots[0].ID, rots[1].ID)
		}
		if rots, _, err := s.RotationsPage(ctx, 5, 2); err != nil || len(rots) != 0 {
			t.Fatalf("page past the end = %v, %v", rots, err)
		}
	})
}

func TestReportCellNeutralisesFormulas(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"=HYPERLINK(\"http://x\")", "'=HYPERLINK(\"http://x\")"},
		{"+1", "'+1"}, {"-kp", "'-kp"}, {"@SUM(A1)", "'@SUM(A1)"}, {"\tx", "'\tx"}, {"\rx", "'\rx"},
		{"kp-2026", "kp-2026"}, {"", ""}, {"CPS.0016", "CPS.0016"},
	} {
		if got := cell(c.in); got != c.want {
			t.Errorf("cell(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
