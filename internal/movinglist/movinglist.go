// Package movinglist finds servers in CPH's server list while the list
// moves. ListCloudPhoneServers lists a project's servers newest first, a
// page of at most 100 at any offset, so every server created while a
// rotation runs pushes every listed server down by one, and every server
// deleted pulls the ones after it up by one. A server the plan saw at
// position p is later at p+shift, where the shift is the same for
// neighbours (only a deletion between two servers tells them apart).
//
// A Finder keeps the shift it last saw and reads the window where a group
// of neighbours should now stand; servers it does not find are looked for
// where the servers it did find say they moved, and the list's count tells
// the shift when none was found. What is still missing after a few reads
// is left to the caller (one read per server, which also tells a deleted
// server from a moved one).
package movinglist

import (
	"context"
	"slices"
)

// Target is a server to find, at the place it was expected when the
// Finder's shift was zero.
type Target struct {
	ID  string
	Pos int
}

// ReadFunc reads the window of the list that starts at offset: the ids in
// list order (at most the page size) and the list's count.
type ReadFunc func(ctx context.Context, offset int) (ids []string, count int, err error)

// Finder locates targets by reading windows of a list that moves. Its
// zero value expects an unmoved list and reads pages of 100.
type Finder struct {
	// Shift is where the list has moved since the targets' places were
	// taken: a target expected at Pos stands at Pos+Shift.
	Shift int
	// Count is the list's count when Shift was seen (0: not known).
	Count int
	// PageSize is a read's window (0: 100).
	PageSize int
	// MaxReads bounds the reads of one Locate (0: 3).
	MaxReads int
}

func (f *Finder) pageSize() int {
	if f.PageSize > 0 {
		return f.PageSize
	}
	return 100
}

// Result is what Locate found.
type Result struct {
	// Found maps a found target's id to where it stands now.
	Found map[string]int
	// Missing are the targets no read held, in Pos order.
	Missing []Target
	// Reads is the number of windows read.
	Reads int
}

type window struct{ lo, hi int } // [lo, hi)

// Locate reads windows until every target is found, no target is left
// whose predicted place has not been read, or MaxReads windows were read.
// Targets should be neighbours (a planned page's): one window holds them
// all when the shift is known. It updates the Finder's Shift and Count to
// what it saw. An error from read ends it with what was found so far.
func (f *Finder) Locate(ctx context.Context, targets []Target, read ReadFunc) (Result, error) {
	size := f.pageSize()
	maxReads := f.MaxReads
	if maxReads <= 0 {
		maxReads = 3
	}
	ts := slices.Clone(targets)
	slices.SortStableFunc(ts, func(a, b Target) int { return a.Pos - b.Pos })
	res := Result{Found: make(map[string]int, len(ts))}
	want := make(map[string]int, len(ts)) // id → index in ts
	for i, t := range ts {
		want[t.ID] = i
	}
	// shifts[i] is target i's shift once found.
	shifts := make([]int, len(ts))
	found := make([]bool, len(ts))
	var read_ []window
	shift := f.Shift
	for res.Reads < maxReads {
		// Predict each missing target's place from its nearest found
		// neighbour (a deletion between them would show in their shifts),
		// or from the shift the Finder holds.
		var next []int // predicted places of missing targets not read yet
		for i, t := range ts {
			if found[i] {
				continue
			}
			q := t.Pos + nearestShift(ts, shifts, found, i, shift)
			if !covered(read_, q) {
				next = append(next, q)
			}
		}
		if len(next) == 0 {
			break
		}
		slices.Sort(next)
		// The window starts at the first predicted place, less half the
		// room the group leaves, so a small error either way stays inside.
		lo := next[0]
		span := 0
		for _, q := range next {
			if q-lo < size {
				span = q - lo + 1
			}
		}
		lo = max(0, lo-(size-span)/2)
		ids, count, err := read(ctx, lo)
		res.Reads++
		if err != nil {
			f.Shift = shift
			res.Missing = missing(ts, found)
			return res, err
		}
		read_ = append(read_, window{lo, lo + size})
		hit := false
		for k, id := range ids {
			i, ok := want[id]
			if !ok || found[i] {
				continue
			}
			found[i], shifts[i] = true, lo+k-ts[i].Pos
			res.Found[id] = lo + k
			shift, hit = shifts[i], true
		}
		if !hit && f.Count > 0 && count != f.Count {
			// Nothing where the shift said: the count tells how far the
			// list moved since (creations less deletions).
			shift += count - f.Count
		}
		f.Count = count
		if len(ids) < size {
			// The end of the list: nothing stands beyond it.
			read_ = append(read_, window{lo + len(ids), 1 << 62})
		}
	}
	f.Shift = shift
	res.Missing = missing(ts, found)
	return res, nil
}

// nearestShift is the shift of the found target nearest to target i by
// expected place (the one before it on a tie), or def when none is found.
func nearestShift(ts []Target, shifts []int, found []bool, i, def int) int {
	best, dist := def, -1
	for j := range ts {
		if !found[j] {
			continue
		}
		d := ts[i].Pos - ts[j].Pos
		if d < 0 {
			d = -d
		}
		if dist < 0 || d < dist {
			best, dist = shifts[j], d
		}
	}
	return best
}

func covered(ws []window, q int) bool {
	for _, w := range ws {
		if q >= w.lo && q < w.hi {
			return true
		}
	}
	return q < 0
}

func missing(ts []Target, found []bool) []Target {
	var out []Target
	for i, t := range ts {
		if !found[i] {
			out = append(out, t)
		}
	}
	return out
}
