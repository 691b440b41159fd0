package movinglist

import (
	"fmt"
	"math"
	"strings"
	"time"
)

// Drift is how a list has moved since places were taken in it, as reads
// of it show. A server created at the top pushes every place down alike;
// a server deleted pulls up only the places after it. With deletions
// spread over the list, the shift falls linearly from the top (every
// creation) to the end (every creation less every deletion: the change
// of the list's count):
//
//	shift(p) = top + (count − count₀ − top) · p / count₀
//
// each end moved on at the rate it was seen moving. Deletions are spread
// at random, not evenly, so a place's shift is taken from the last read
// near it (a stretch of a 64th of the list) when there was one, moved on
// at that rate: a single shift for the whole list would be off by the
// deletions between two places, tens within a minute at a deletion a
// second.
type Drift struct {
	// Count0 is the list's count when the places were taken (0: not
	// known; the shift is then the same everywhere).
	Count0 int
	// Top is the shift at place 0, and Count the list's count, when last
	// seen (At).
	Top   float64
	Count int
	At    time.Time
	// TopRate and CountRate are how fast they were seen moving, a second
	// (NaN: not known yet): the top's from stretches seen twice, the
	// count's from the count seen at From.
	TopRate, CountRate float64
	From               time.Time
	FromCount          int
	// Near is the last shift seen in each stretch of the list.
	Near [Stretches]Near
}

// Stretches is how many stretches of the list a Drift remembers a shift
// for.
const Stretches = 64

// Near is a shift seen in a stretch of the list, and when (zero: never).
type Near struct {
	Shift int
	At    time.Time
}

// NewDrift is the drift of a list not read since its count was count0.
func NewDrift(count0 int) Drift {
	return Drift{Count0: count0, Count: count0, TopRate: math.NaN(), CountRate: math.NaN()}
}

// Moving reports whether the list was seen to move.
func (d Drift) Moving() bool { return d.Top != 0 || d.Count != d.Count0 }

// at is d's ends moved on to t at the rates they were seen moving.
func (d Drift) at(t time.Time) (top, count float64) {
	top, count = d.Top, float64(d.Count)
	if dt := t.Sub(d.At).Seconds(); !d.At.IsZero() && dt > 0 {
		top += d.rate(0) * dt
		count += orZero(d.CountRate) * dt
	}
	return top, count
}

// rate is how fast the shift at a place f down the list moves: as the
// top less the deletions above it. Until the top's rate is known it is
// taken to move as the count does (a list that only grows).
func (d Drift) rate(f float64) float64 {
	count := orZero(d.CountRate)
	if math.IsNaN(d.TopRate) {
		return count
	}
	return d.TopRate + (count-d.TopRate)*f
}

func orZero(rate float64) float64 {
	if math.IsNaN(rate) {
		return 0
	}
	return rate
}

// frac is how far down the list place pos stood when the places were
// taken, 0 at the top to 1 at the end.
func (d Drift) frac(pos int) float64 {
	if d.Count0 <= 0 {
		return 0
	}
	return min(max(float64(pos)/float64(d.Count0), 0), 1)
}

func (d Drift) stretch(pos int) int {
	return min(int(d.frac(pos)*Stretches), Stretches-1)
}

// Finder is a Finder for targets around place pos at t: the shift and
// count d predicts there and then.
func (d Drift) Finder(pos int, t time.Time) Finder {
	top, count := d.at(t)
	f := d.frac(pos)
	shift := top + (count-float64(d.Count0)-top)*f
	if d.Count0 <= 0 {
		shift = top
	}
	if n := d.Near[d.stretch(pos)]; !n.At.IsZero() {
		shift = float64(n.Shift) + d.rate(f)*max(t.Sub(n.At).Seconds(), 0)
	}
	return Finder{Shift: int(math.Round(shift)), Count: int(math.Round(count))}
}

// Sighting is where a read found a target: its place when the places were
// taken, and its shift since.
type Sighting struct{ Pos, Shift int }

// rateSpan is the shortest time a rate is measured over: reads a few
// milliseconds apart would make one of a server's noise.
const rateSpan = time.Second

// maxTopFrac bounds how far down the list a stretch seen twice still
// tells the top's rate: near the end, the rate is divided by a small
// number, so any error in it is multiplied.
const maxTopFrac = 0.8

// Seen returns d updated with what a read at t showed: where it found a
// target (if it did), and the list's count.
func (d Drift) Seen(s *Sighting, count int, t time.Time) Drift {
	top, _ := d.at(t)
	if d.At.IsZero() && d.Count0 > 0 {
		top = float64(count - d.Count0) // nothing better known: a list that only grew
	}
	n := d
	switch dt := t.Sub(d.From).Seconds(); {
	case d.From.IsZero():
		n.From, n.FromCount = t, count
	case dt >= rateSpan.Seconds():
		n.CountRate = smooth(d.CountRate, float64(count-d.FromCount)/dt)
		n.From, n.FromCount = t, count
	}
	if s != nil {
		f := d.frac(s.Pos)
		b := d.stretch(s.Pos)
		last := d.Near[b]
		if dt := t.Sub(last.At).Seconds(); !last.At.IsZero() && dt >= rateSpan.Seconds() && f <= maxTopFrac {
			// The stretch seen again: how fast its shift moves tells the
			// top's rate (the count's is the end's).
			local := float64(s.Shift-last.Shift) / dt
			n.TopRate = smooth(d.TopRate, (local-orZero(n.CountRate)*f)/(1-f))
		}
		// The shift at the top that the sighting tells, trusted less the
		// further down the list it was: the deletions above it, spread
		// at random, are divided by what is left below.
		est := float64(s.Shift)
		if f > 0 && f < 1 {
			est = (float64(s.Shift) - float64(count-d.Count0)*f) / (1 - f)
		}
		top += (1 - f) * (1 - f) * (est - top)
		if last.At.IsZero() || t.Sub(last.At) >= rateSpan {
			// Kept for a second at least, so the stretch's next sighting
			// measures its rate.
			n.Near[b] = Near{Shift: s.Shift, At: t}
		}
	}
	n.Top, n.Count, n.At = top, count, t
	return n
}

func smooth(old, seen float64) float64 {
	if math.IsNaN(old) {
		return seen
	}
	return (old + seen) / 2
}

// MarshalText encodes d as one line, to be kept with the rotation it
// belongs to: its numbers, then "stretch:shift:ms" for each stretch seen.
func (d Drift) MarshalText() ([]byte, error) {
	b := fmt.Appendf(nil, "%d %g %d %d %g %g %d %d", d.Count0, d.Top, d.Count, ms(d.At),
		d.TopRate, d.CountRate, ms(d.From), d.FromCount)
	for i, n := range d.Near {
		if !n.At.IsZero() {
			b = fmt.Appendf(b, " %d:%d:%d", i, n.Shift, ms(n.At))
		}
	}
	return b, nil
}

func ms(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}

func fromMS(ms int64) time.Time {
	if ms <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(ms)
}

// UnmarshalText decodes what MarshalText encoded.
func (d *Drift) UnmarshalText(b []byte) error {
	fields := strings.Fields(string(b))
	if len(fields) < 8 {
		return fmt.Errorf("list drift %q: want at least 8 fields", b)
	}
	var at, from int64
	var n Drift
	if _, err := fmt.Sscan(strings.Join(fields[:8], " "), &n.Count0, &n.Top, &n.Count, &at,
		&n.TopRate, &n.CountRate, &from, &n.FromCount); err != nil {
		return fmt.Errorf("list drift %q: %w", b, err)
	}
	n.At, n.From = fromMS(at), fromMS(from)
	for _, f := range fields[8:] {
		var i, shift int
		var when int64
		if _, err := fmt.Sscanf(f, "%d:%d:%d", &i, &shift, &when); err != nil || i < 0 || i >= Stretches {
			return fmt.Errorf("list drift %q: stretch %q", b, f)
		}
		n.Near[i] = Near{Shift: shift, At: fromMS(when)}
	}
	*d = n
	return nil
}
