package movinglist

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// list is a server list that moves: created servers go on top, deleted
// ones leave a gap that closes.
type list struct{ ids []string }

func newList(n int) *list {
	l := &list{}
	for i := range n {
		l.ids = append(l.ids, fmt.Sprintf("s%06d", i))
	}
	return l
}

func (l *list) create(k int, seq *int) {
	for range k {
		*seq++
		l.ids = slices.Insert(l.ids, 0, fmt.Sprintf("n%06d", *seq))
	}
}

func (l *list) read(size int, reads *int) ReadFunc {
	return func(_ context.Context, offset int) ([]string, int, error) {
		*reads++
		if offset >= len(l.ids) {
			return nil, len(l.ids), nil
		}
		return slices.Clone(l.ids[offset:min(offset+size, len(l.ids))]), len(l.ids), nil
	}
}

func (l *list) pos(id string) int { return slices.Index(l.ids, id) }

// TestLocateFindsEveryServerOnAMovingList is the shift finder's property:
// whatever was created and deleted since the places were taken, every
// target still listed is found within three reads, and only deleted
// targets are missing.
func TestLocateFindsEveryServerOnAMovingList(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range 3000 {
		n := 500 + rng.IntN(3000)
		l := newList(n)
		// A planned page: up to 100 neighbours, all of it or a subset.
		page := rng.IntN(n / 100)
		var targets []Target
		every := 1 + rng.IntN(3)*rng.IntN(5)
		for p := page * 100; p < min(n, page*100+100); p += every {
			targets = append(targets, Target{ID: l.ids[p], Pos: p})
		}
		// What the finder knew: the list as it stood after some earlier
		// churn (its shift seen on a neighbouring page, its count then).
		seq := 0
		before := rng.IntN(50)
		l.create(before, &seq)
		f := Finder{Shift: before, Count: len(l.ids)}
		if rng.IntN(4) == 0 {
			f = Finder{Count: n} // only the plan's count is known
		}
		// Since then: creations on top, deletions anywhere.
		l.create(rng.IntN(300), &seq)
		deleted := map[string]bool{}
		for range rng.IntN(30) {
			i := rng.IntN(len(l.ids))
			deleted[l.ids[i]] = true
			l.ids = slices.Delete(l.ids, i, i+1)
		}
		reads := 0
		res, err := f.Locate(context.Background(), targets, l.read(100, &reads))
		if err != nil {
			t.Fatal(err)
		}
		if res.Reads != reads || reads > 3 {
			t.Fatalf("trial %d: %d reads (result says %d), want at most 3", trial, reads, res.Reads)
		}
		for _, m := range res.Missing {
			if !deleted[m.ID] {
				t.Fatalf("trial %d: %s (planned at %d, now at %d) not found; finder %+v, %d reads", trial, m.ID, m.Pos, l.pos(m.ID), f, reads)
			}
		}
		for id, at := range res.Found {
			if got := l.pos(id); got != at {
				t.Fatalf("trial %d: %s found at %d, stands at %d", trial, id, at, got)
			}
		}
		if len(res.Found)+len(res.Missing) != len(targets) {
			t.Fatalf("trial %d: %d found + %d missing != %d targets", trial, len(res.Found), len(res.Missing), len(targets))
		}
	}
}

// TestLocateStill: on a list that did not move, a page of targets costs
// one read.
func TestLocateStill(t *testing.T) {
	l := newList(1000)
	var targets []Target
	for p := 300; p < 400; p++ {
		targets = append(targets, Target{ID: l.ids[p], Pos: p})
	}
	reads := 0
	var f Finder
	res, err := f.Locate(context.Background(), targets, l.read(100, &reads))
	if err != nil || reads != 1 || len(res.Missing) != 0 {
		t.Fatalf("reads %d, missing %v, err %v; want 1 read, none missing", reads, res.Missing, err)
	}
}

// TestLocateLearnsTheShift: a page read on a list that moved leaves the
// finder with the shift, so the next page costs one read.
func TestLocateLearnsTheShift(t *testing.T) {
	l := newList(1000)
	page := func(k int) []Target {
		var ts []Target
		for p := k * 100; p < k*100+100; p++ {
			ts = append(ts, Target{ID: l.ids[p], Pos: p})
		}
		return ts
	}
	p2, p3 := page(2), page(3)
	seq := 0
	l.create(37, &seq)
	var f Finder
	reads := 0
	if res, _ := f.Locate(context.Background(), p2, l.read(100, &reads)); len(res.Missing) != 0 {
		t.Fatalf("missing %v", res.Missing)
	}
	if f.Shift != 37 {
		t.Fatalf("shift %d, want 37", f.Shift)
	}
	reads = 0
	if res, _ := f.Locate(context.Background(), p3, l.read(100, &reads)); len(res.Missing) != 0 || reads != 1 {
		t.Fatalf("second page: missing %v in %d reads, want none in 1", res.Missing, reads)
	}
}
