package movinglist

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// A list of n places read while servers are created at its top and
// deleted at random places, a place at random every 100 ms: the drift
// predicts nearly every place's shift within the few places of slack a
// verification window has, where one shift for the whole list, moved on
// as the count moves (what verification kept before), is off by the
// deletions between two places.
func TestDriftFollowsCreationsAndDeletions(t *testing.T) {
	const slack = 3 // a window of 94 places read as a page of 100
	for _, tc := range []struct {
		name          string
		create, del   float64 // a second
		deletedBefore int     // deleted before the first read
		// The share of predictions off by more than slack: the drift's
		// at most maxOff, the single shift's at least minFlatOff.
		maxOff, minFlatOff float64
	}{
		{name: "still", maxOff: 0},
		{name: "growing", create: 5, maxOff: 0.02},
		{name: "growing and shrinking", create: 5, del: 1, deletedBefore: 30, maxOff: 0.12, minFlatOff: 0.5},
		{name: "shrinking", del: 3, deletedBefore: 30, maxOff: 0.12, minFlatOff: 0.5},
		{name: "a minute of deletions", create: 5, del: 1, deletedBefore: 60, maxOff: 0.15, minFlatOff: 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 20000
			rng := rand.New(rand.NewPCG(1, 2))
			var created float64
			var deleted []int // places (as taken) of the servers deleted so far
			for range tc.deletedBefore {
				deleted = append(deleted, rng.IntN(n))
			}
			shift := func(pos int) int {
				s := int(created)
				for _, d := range deleted {
					if d < pos {
						s--
					}
				}
				return s
			}
			count := func() int { return n + int(created) - len(deleted) }
			start := time.Unix(1_000_000, 0)
			d := NewDrift(n)
			var off, flatOff, predictions int
			lastShift, lastCount := 0, n
			for step := range 300 {
				now := start.Add(time.Duration(step) * 100 * time.Millisecond)
				created = tc.create * float64(step) / 10
				for len(deleted) < tc.deletedBefore+int(tc.del*float64(step)/10) {
					deleted = append(deleted, rng.IntN(n))
				}
				pos := rng.IntN(n)
				if step >= 30 { // 3 s to learn the rates
					predictions++
					if abs(d.Finder(pos, now).Shift-shift(pos)) > slack {
						off++
					}
					if abs(lastShift+count()-lastCount-shift(pos)) > slack {
						flatOff++
					}
				}
				lastShift, lastCount = shift(pos), count()
				d = d.Seen(&Sighting{Pos: pos, Shift: lastShift}, lastCount, now)
			}
			t.Logf("off by more than %d places: the drift %d of %d predictions, a single shift %d", slack, off, predictions, flatOff)
			if got := float64(off) / float64(predictions); got > tc.maxOff {
				t.Errorf("%d of %d predictions off by more than %d places (%.0f %%), want ≤ %.0f %%", off, predictions, slack, 100*got, 100*tc.maxOff)
			}
			if got := float64(flatOff) / float64(predictions); got < tc.minFlatOff {
				t.Errorf("a single shift was off for only %.0f %% of the places: the case does not test the drift (want ≥ %.0f %%)", 100*got, 100*tc.minFlatOff)
			}
		})
	}
}

func TestDriftText(t *testing.T) {
	for _, d := range []Drift{
		NewDrift(0),
		NewDrift(20000),
		NewDrift(20000).Seen(&Sighting{Pos: 100, Shift: 7}, 20005, time.UnixMilli(1_700_000_000_123)),
		{Count0: 5, Top: 1.5, Count: 9, At: time.UnixMilli(2), TopRate: 0.25, CountRate: math.NaN(), From: time.UnixMilli(1), FromCount: 3, Near: [Stretches]Near{3: {Shift: -4, At: time.UnixMilli(7)}}},
	} {
		b, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var got Drift
		if err := got.UnmarshalText(b); err != nil {
			t.Fatalf("UnmarshalText(%q): %v", b, err)
		}
		if !same(got, d) {
			t.Errorf("UnmarshalText(%q) = %+v, want %+v", b, got, d)
		}
	}
	var d Drift
	if err := d.UnmarshalText([]byte("20000 x")); err == nil {
		t.Error("UnmarshalText of a corrupt drift: no error")
	}
}

func same(a, b Drift) bool {
	eq := func(x, y float64) bool { return x == y || math.IsNaN(x) && math.IsNaN(y) }
	return a.Near == b.Near && a.Count0 == b.Count0 && eq(a.Top, b.Top) && a.Count == b.Count && a.At.Equal(b.At) &&
		eq(a.TopRate, b.TopRate) && eq(a.CountRate, b.CountRate) && a.From.Equal(b.From) &&
		a.FromCount == b.FromCount
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}
