package movinglist

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// MaxInFlight bounds the reads a Sweep keeps in flight at once: enough
// for a read rate of 20/s at a round trip of a second (rate × latency,
// a quarter to spare, and one more: 26), as the pipeline's stages allow.
const MaxInFlight = 32

// ErrLost is returned by Sweep.Run when the list moved so far between two
// reads that no read near where it should stand met the part already read.
var ErrLost = errors.New("lost track of a list that moved too far between reads")

// Window is one read of a list: the items from an offset, in list order,
// and the list's count when it was read (0: not reported).
type Window[T any] struct {
	Items []T
	Count int
}

// Progress is how far a Sweep is.
type Progress struct {
	// Reads counts the windows read so far; Pages is what the whole list
	// takes, as far as its latest count tells (it grows with the list and
	// with re-reads, and equals Reads once the sweep is done).
	Reads, Pages int
	// ReReads counts the reads made because two windows did not meet: the
	// list moved between them.
	ReReads int
	// Items counts the items handed over, each once.
	Items int
	// Count is the list's count in the latest answer.
	Count int
}

// Sweep reads a whole list that moves — items created on top, deleted
// anywhere, as CPH's newest-first server list does — many windows at once,
// and hands over every item once, in list order.
//
// The first window gives the list's count; the others are read at the
// offsets it calls for, up to InFlight at a time, each overlapping the one
// before by two items (one for windows under 6). A window is taken once it
// shares an item with the part already taken: that proves nothing lies
// between them, whatever moved, and its items after the last shared one
// are new. A window that shares nothing (the list moved more than the
// overlap between the two reads) is bridged by a read where the last item
// taken stands now, learned from the change of count. The items handed
// over, counted in order, are places in one list: the list as the sweep
// saw it, the way verification later expects to find them (shifted by the
// servers created and deleted since).
//
// Items created while the list is read are not looked for (they are
// above the first window); items deleted while it is read are handed over
// if a read saw them.
type Sweep[T any] struct {
	// Read reads the window of at most PageSize items from offset. It is
	// called from several goroutines at once.
	Read func(ctx context.Context, offset int) (Window[T], error)
	// ID names an item.
	ID func(T) string
	// PageSize is a full window (0: 100; at least 2).
	PageSize int
	// InFlight says how many reads to keep in flight (clamped to 1 …
	// MaxInFlight); it is asked before each read. Nil: MaxInFlight.
	InFlight func() int
	// Progress, when set, is called after each window taken, from the
	// goroutine that called Run.
	Progress func(Progress)
}

// read is one window read, tagged with its place in the sweep.
type read[T any] struct {
	seq, offset, ticket int
	w                   Window[T]
	err                 error
}

// sweep is one Run's state. Only Run's goroutine touches it.
type sweep[T any] struct {
	*Sweep[T]
	emit       func([]T) error
	size, step int
	// last and prev are the last two windows that brought new items: the
	// tail a window must share an item with. They map each item's id to
	// its offset when read.
	last, prev map[string]int
	// end is the offset of the last item taken when it was read, and
	// endCount the list's count then.
	end, endCount int
	// first is the first window's count; count the latest read's: the
	// one started last of those answered (tickets number the reads in the
	// order they start).
	first, count         int
	tickets, countTicket int
	done                 bool
	progress             Progress
}

// Run reads the list and calls emit with each window's new items, in list
// order, until the end of the list; an error from Read or emit ends it.
func (s *Sweep[T]) Run(ctx context.Context, emit func(items []T) error) error {
	size := s.PageSize
	if size == 0 {
		size = 100
	}
	if size < 2 {
		return fmt.Errorf("page size %d: want at least 2", size)
	}
	overlap := max(1, min(2, size/3))
	sw := &sweep[T]{Sweep: s, emit: emit, size: size, step: size - overlap}
	w, err := s.Read(ctx, 0)
	if err != nil {
		return err
	}
	sw.first, sw.count, sw.endCount = w.Count, w.Count, w.Count
	sw.progress.Reads = 1
	if err := sw.take(0, w, 0); err != nil {
		return err
	}
	// An empty first window is an empty list.
	sw.done = len(w.Items) == 0 || sw.atEnd(0, w)

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	results := make(chan read[T], MaxInFlight)
	ready := make(map[int]read[T])
	next, want, inFlight := 1, 1, 0 // next window to read, next to take
	for !sw.done {
		for sw.wanted(next, want, inFlight) {
			r := read[T]{seq: next, offset: next*sw.step + sw.drift(), ticket: sw.ticket()}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.w, r.err = s.Read(ctx, r.offset)
				results <- r
			}()
			next++
			inFlight++
		}
		if r, ok := ready[want]; ok {
			delete(ready, want)
			want++
			if err := sw.join(ctx, r); err != nil {
				return err
			}
			continue
		}
		if inFlight == 0 {
			// Every window the count called for is taken and the list goes
			// on (it grew, or reports no count): read on from the tail.
			if err := sw.bridge(ctx); err != nil {
				return err
			}
			continue
		}
		r := <-results
		inFlight--
		if r.err == nil {
			sw.observe(r.ticket, r.w.Count)
			sw.progress.Reads++
		}
		ready[r.seq] = r
	}
	sw.report()
	return nil
}

// wanted reports whether window seq is to be read now: the count calls
// for it, the reads in flight leave room, and the windows read but not
// taken yet stay few (memory stays bounded whatever the list's size).
func (sw *sweep[T]) wanted(seq, want, inFlight int) bool {
	limit := MaxInFlight
	if sw.InFlight != nil {
		limit = min(MaxInFlight, max(1, sw.InFlight()))
	}
	return inFlight < limit && seq-want < 2*MaxInFlight &&
		sw.count > 0 && seq*sw.step+sw.drift()+(sw.size-sw.step) < sw.count
}

func (sw *sweep[T]) ticket() int {
	sw.tickets++
	return sw.tickets
}

// observe keeps the count of the read started last: an answer that waited
// in line while the sweep was busy tells an older count.
func (sw *sweep[T]) observe(ticket, count int) {
	if ticket > sw.countTicket {
		sw.count, sw.countTicket = count, ticket
	}
}

// drift is how far the list's count moved since the first window: the
// offsets still to read move by as much, so windows keep their overlap
// while servers are created on top.
func (sw *sweep[T]) drift() int {
	if sw.first == 0 || sw.count == 0 {
		return 0
	}
	return sw.count - sw.first
}

// join takes window r, bridging to it when it does not meet the tail.
func (sw *sweep[T]) join(ctx context.Context, r read[T]) error {
	if r.err != nil {
		return r.err
	}
	if met, _, err := sw.link(r.offset, r.w); err != nil || met || sw.done {
		return err
	}
	if err := sw.bridge(ctx); err != nil || sw.done {
		return err
	}
	// Still apart: the bridges go on from the tail when the next window
	// comes; this one is dropped.
	_, _, err := sw.link(r.offset, r.w)
	return err
}

// link takes w if it shares an item with the tail: met. Its items after
// the last shared one are handed over (advanced when there are any).
func (sw *sweep[T]) link(offset int, w Window[T]) (met, advanced bool, err error) {
	j := sw.shared(w)
	if j < 0 {
		return false, false, nil
	}
	if j < len(w.Items)-1 {
		if err := sw.take(offset, w, j+1); err != nil {
			return true, true, err
		}
		advanced = true
	}
	// The window ends at the end of the list, and the tail reaches it.
	if sw.atEnd(offset, w) {
		sw.done = true
	}
	return true, advanced, nil
}

// shared is the index of w's last item in the tail, or -1.
func (sw *sweep[T]) shared(w Window[T]) int {
	for i := len(w.Items) - 1; i >= 0; i-- {
		id := sw.ID(w.Items[i])
		if _, ok := sw.last[id]; ok {
			return i
		}
		if _, ok := sw.prev[id]; ok {
			return i
		}
	}
	return -1
}

// take hands over items[from:], the new items of the window read at
// offset, and makes the window the tail's end.
func (sw *sweep[T]) take(offset int, w Window[T], from int) error {
	fresh := w.Items[from:]
	if len(fresh) > 0 {
		if err := sw.emit(fresh); err != nil {
			return err
		}
	}
	sw.prev, sw.last = sw.last, sw.places(offset, w.Items)
	sw.progress.Items += len(fresh)
	sw.end, sw.endCount = offset+len(w.Items)-1, w.Count
	sw.report()
	return nil
}

func (sw *sweep[T]) atEnd(offset int, w Window[T]) bool {
	n := len(w.Items)
	return n < sw.size || w.Count > 0 && offset+n >= w.Count
}

// bridge reads from where the last item taken stands now until a window
// meets the tail and brings new items (or shows the end). The change of
// count since that item was read moves it by the servers created on top
// less those deleted anywhere, so the first read starts at or before it. A
// window that meets the tail without passing its end tells how far the
// tail moved, and the next read goes there; one that does not meet it is
// tried a step after, then before.
func (sw *sweep[T]) bridge(ctx context.Context) error {
	overlap := sw.size - sw.step
	guess := sw.end + 1 - overlap
	if sw.endCount > 0 && sw.count > 0 {
		guess += sw.count - sw.endCount
	}
	at, steps := guess, []int{1, -1, 2, -2}
	for range maxBridgeReads {
		offset, ticket := max(0, at), sw.ticket()
		w, err := sw.Read(ctx, offset)
		if err != nil {
			return err
		}
		sw.progress.Reads++
		sw.progress.ReReads++
		sw.observe(ticket, w.Count)
		met, advanced, err := sw.link(offset, w)
		switch {
		case err != nil || met && (advanced || sw.done):
			return err
		case met:
			// Behind the tail's end: the shared item tells how far the
			// tail moved since it was read.
			id := sw.ID(w.Items[sw.shared(w)])
			was, ok := sw.last[id]
			if !ok {
				was = sw.prev[id]
			}
			guess = sw.end + 1 + offset + sw.shared(w) - was - overlap
			at, steps = guess, []int{1, -1, 2, -2}
		case len(steps) > 0:
			at, steps = guess+steps[0]*sw.step, steps[1:]
		}
	}
	return ErrLost
}

// maxBridgeReads bounds the reads of one bridge.
const maxBridgeReads = 6

// places maps the ids of items read at offset to their offsets.
func (sw *sweep[T]) places(offset int, items []T) map[string]int {
	m := make(map[string]int, len(items))
	for i, it := range items {
		m[sw.ID(it)] = offset + i
	}
	return m
}

func (sw *sweep[T]) report() {
	if sw.Progress == nil {
		return
	}
	p := sw.progress
	p.Count = sw.count
	pages := 1
	if c := sw.count - sw.drift(); c > sw.size {
		pages += (c - sw.size + sw.step - 1) / sw.step
	}
	p.Pages = max(pages+p.ReReads, p.Reads)
	if sw.done {
		p.Pages = p.Reads
	}
	sw.Progress(p)
}
