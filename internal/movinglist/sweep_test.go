package movinglist

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// churning is a list that moves while a Sweep reads it: before each read,
// servers are created on top and deleted anywhere, and reads answer in
// whatever order their goroutines get there.
type churning struct {
	mu      sync.Mutex
	ids     []string
	rng     *rand.Rand
	created int
	deleted map[string]bool
	reads   int
	// churn changes the list before a read.
	churn func(c *churning)
}

func newChurning(n int, seed uint64, churn func(c *churning)) *churning {
	c := &churning{rng: rand.New(rand.NewPCG(seed, 7)), deleted: map[string]bool{}, churn: churn}
	for i := range n {
		c.ids = append(c.ids, fmt.Sprintf("s%06d", i))
	}
	return c
}

func (c *churning) create(k int) {
	for range k {
		c.created++
		c.ids = slices.Insert(c.ids, 0, fmt.Sprintf("n%06d", c.created))
	}
}

func (c *churning) delete(k int) {
	for range min(k, len(c.ids)) {
		i := c.rng.IntN(len(c.ids))
		c.deleted[c.ids[i]] = true
		c.ids = slices.Delete(c.ids, i, i+1)
	}
}

func (c *churning) read(size int) func(context.Context, int) (Window[string], error) {
	return func(ctx context.Context, offset int) (Window[string], error) {
		c.mu.Lock()
		pause := time.Duration(c.rng.IntN(200)) * time.Microsecond
		c.mu.Unlock()
		time.Sleep(pause) // answers come back in any order
		c.mu.Lock()
		defer c.mu.Unlock()
		c.reads++
		if c.churn != nil && c.reads > 1 { // the first read is the list the sweep starts from
			c.churn(c)
		}
		if offset >= len(c.ids) {
			return Window[string]{Count: len(c.ids)}, nil
		}
		return Window[string]{Items: slices.Clone(c.ids[offset:min(offset+size, len(c.ids))]), Count: len(c.ids)}, nil
	}
}

func sweepAll(t *testing.T, c *churning, size, inFlight int) ([]string, Progress, error) {
	t.Helper()
	var got []string
	var last Progress
	s := Sweep[string]{Read: c.read(size), ID: func(s string) string { return s }, PageSize: size,
		InFlight: func() int { return inFlight }, Progress: func(p Progress) { last = p }}
	err := s.Run(context.Background(), func(items []string) error {
		got = append(got, items...)
		return nil
	})
	return got, last, err
}

// TestSweepSeesEveryServerOnceOnAMovingList is the sweep's property: with
// servers created on top and deleted anywhere between any two reads (a
// few, and now and then several windows' worth at once), and
// reads answering in any order, every server of the list it started from
// that was never deleted is handed over exactly once, in list order, at a
// place no further from its first one than the deletions; nothing is
// handed over twice.
func TestSweepSeesEveryServerOnceOnAMovingList(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	lost := 0
	defer func() { t.Logf("%d burst trials lost track (ErrLost)", lost) }()
	trials := 150
	if testing.Short() {
		trials = 60
	}
	for trial := range trials {
		n := rng.IntN(1500)
		size := []int{10, 100}[rng.IntN(2)]
		inFlight := 1 + rng.IntN(MaxInFlight)
		// Up to a few servers a read, 50 times what a fleet growing by 5
		// a second does to pages of 100 read 20 a second (a tenth of that
		// for pages of 10).
		create, del, burst := rng.IntN(size/25+1), rng.IntN(size/50+1), rng.IntN(4) == 0
		c := newChurning(n, uint64(trial), func(c *churning) {
			c.create(c.rng.IntN(create + 1))
			c.delete(c.rng.IntN(del + 1))
			if burst && c.rng.IntN(20) == 0 {
				// Up to a window's worth at once: windows no longer meet.
				c.create(c.rng.IntN(size))
			}
		})
		start := slices.Clone(c.ids)
		got, p, err := sweepAll(t, c, size, inFlight)
		name := fmt.Sprintf("trial %d (%d servers, pages of %d, %d in flight, churn +%d -%d burst %t)",
			trial, n, size, inFlight, create, del, burst)
		if burst && errors.Is(err, ErrLost) {
			// A window's worth created between two reads that answer in
			// whatever order the scheduler gives them may leave no server
			// shared to bridge by: the sweep says so (the plan fails with
			// it and is run again) rather than hand over a wrong list.
			lost++
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		place := make(map[string]int, len(got))
		for i, id := range got {
			if _, dup := place[id]; dup {
				t.Fatalf("%s: %s handed over twice", name, id)
			}
			place[id] = i
		}
		prev := -1
		for i, id := range start {
			at, ok := place[id]
			switch {
			case !ok && !c.deleted[id]:
				t.Fatalf("%s: %s (place %d) never handed over", name, id, i)
			case !ok:
				continue
			case at < prev:
				t.Fatalf("%s: %s handed over out of order", name, id)
			case at > i || at < i-len(c.deleted):
				t.Fatalf("%s: %s at place %d, first at %d with %d deleted", name, id, at, i, len(c.deleted))
			}
			prev = at
		}
		if p.Items != len(got) || p.Pages != p.Reads || p.Reads != c.reads {
			t.Fatalf("%s: last progress %+v, %d items, %d reads", name, p, len(got), c.reads)
		}
	}
}

// TestSweepReadsEachPageOnceOnAStillList: a list that does not move costs
// one read per page (the overlap aside), however many are in flight.
func TestSweepReadsEachPageOnceOnAStillList(t *testing.T) {
	tests := []struct {
		n, size, inFlight, reads int
	}{
		{0, 100, 16, 1},
		{100, 100, 16, 1},
		{196, 100, 16, 2},
		{250, 100, 16, 3},
		{10000, 100, 16, 103},
		{10000, 100, 1, 103},
		{7, 3, 4, 3},
		{9, 2, 4, 8},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%d by %d, %d in flight", tt.n, tt.size, tt.inFlight), func(t *testing.T) {
			c := newChurning(tt.n, 1, nil)
			got, p, err := sweepAll(t, c, tt.size, tt.inFlight)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.ids) {
				t.Errorf("handed over %d servers, want the %d listed, in order", len(got), tt.n)
			}
			if c.reads != tt.reads || p.ReReads != 0 {
				t.Errorf("%d reads (%d again), want %d", c.reads, p.ReReads, tt.reads)
			}
		})
	}
}

// TestSweepFollowsAGrowingList: a list that grows faster than the overlap
// between two reads is still read whole, with re-reads where windows did
// not meet.
func TestSweepFollowsAGrowingList(t *testing.T) {
	c := newChurning(3000, 1, func(c *churning) { c.create(5) })
	start := slices.Clone(c.ids)
	got, p, err := sweepAll(t, c, 100, 16)
	if err != nil {
		t.Fatal(err)
	}
	var old []string
	for _, id := range got {
		if strings.HasPrefix(id, "s") {
			old = append(old, id)
		}
	}
	if !slices.Equal(old, start) {
		t.Fatalf("handed over %d of the %d servers listed first", len(old), len(start))
	}
	if p.ReReads == 0 {
		t.Errorf("no re-reads although every read moved the list by 5: %+v", p)
	}
	t.Logf("%+v", p)
}

// TestSweepWithoutCount walks a list whose answers carry no count one
// window after the other, each starting where the last one ended.
func TestSweepWithoutCount(t *testing.T) {
	c := newChurning(250, 1, nil)
	read := c.read(100)
	s := Sweep[string]{ID: func(s string) string { return s }, Read: func(ctx context.Context, offset int) (Window[string], error) {
		w, err := read(ctx, offset)
		w.Count = 0
		return w, err
	}}
	var got []string
	if err := s.Run(context.Background(), func(items []string) error { got = append(got, items...); return nil }); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, c.ids) || c.reads != 3 {
		t.Errorf("%d servers in %d reads, want 250 in 3", len(got), c.reads)
	}
}

// TestSweepStopsAtErrors: a read's error or emit's ends the sweep with
// that error, and no read is left running.
func TestSweepStopsAtErrors(t *testing.T) {
	boom := errors.New("boom")
	c := newChurning(5000, 1, nil)
	read := c.read(100)
	var mu sync.Mutex
	running := 0
	s := Sweep[string]{ID: func(s string) string { return s }, Read: func(ctx context.Context, offset int) (Window[string], error) {
		mu.Lock()
		running++
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		if offset == 20*98 {
			return Window[string]{}, boom
		}
		return read(ctx, offset)
	}}
	err := s.Run(context.Background(), func([]string) error { return nil })
	mu.Lock()
	defer mu.Unlock()
	if !errors.Is(err, boom) || running != 0 {
		t.Errorf("err %v with %d reads running, want boom and none", err, running)
	}
	stop := errors.New("enough")
	s.Read = read
	if err := s.Run(context.Background(), func([]string) error { return stop }); !errors.Is(err, stop) {
		t.Errorf("err %v, want emit's", err)
	}
}
