package cphsim

import (
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// churn creates and deletes servers at steady rates while the simulator
// runs, the way a real fleet moves under a rotation. Like jobs, it holds no
// goroutine: settle applies the creations and deletions the clock has
// passed, the next time anyone looks. Guarded by Sim.mu.
type churn struct {
	// rng is churn's own stream, so that fleet generation and request-time
	// draws do not change when churn is turned on.
	rng                    *rand.Rand
	createRate, deleteRate float64 // servers per second; 0: none
	start                  int64   // unix nanoseconds the rates count from
	created, deleted       int64   // events applied since start
}

func newChurn(o Options) churn {
	return churn{
		rng:        rand.New(rand.NewPCG(o.Seed, 0xc4a27)),
		createRate: validRate(o.CreateRate),
		deleteRate: validRate(o.DeleteRate),
		start:      o.Clock().UnixNano(),
	}
}

// validRate is r, or 0 when r is negative, NaN or infinite.
func validRate(r float64) float64 {
	if !(r > 0) || math.IsInf(r, 1) {
		return 0
	}
	return r
}

// never is the due time of an event that does not come.
const never = math.MaxInt64

// next returns the due time of the next churn event and whether it is a
// creation; a creation and a deletion due together create first.
func (c *churn) next() (at int64, create bool) {
	ca := eventDue(c.start, c.createRate, c.created+1)
	da := eventDue(c.start, c.deleteRate, c.deleted+1)
	if ca <= da {
		return ca, true
	}
	return da, false
}

// eventDue is the first instant (unix nanoseconds) at which
// floor(rate × seconds since start) reaches k, so that exactly that many
// events have happened by any instant. never if rate is 0 or the instant
// is out of range.
func eventDue(start int64, rate float64, k int64) int64 {
	if rate <= 0 {
		return never
	}
	approx := float64(k) / rate * 1e9
	if approx > 1<<62 || float64(start)+approx > 1<<62 {
		return never
	}
	count := func(t int64) int64 { return int64(math.Floor(rate * float64(t-start) / 1e9)) }
	// The division above may be off by a rounding step either way; walk to
	// the exact instant the count formula gives.
	t := start + int64(math.Ceil(approx))
	for count(t) < k {
		t++
	}
	for t > start && count(t-1) >= k {
		t--
	}
	return t
}

// settle applies, in time order, every job end and churn event due by now,
// so that a job ending before its server's deletion ends as drawn and one
// still running when its server is deleted fails with JobCodeServerDeleted.
// A job due at the instant of a deletion ends first. It costs O(log n) per
// ending job, O(n) per deletion (n live servers) and nothing per running
// job. s.mu must be held.
func (s *Sim) settle(now time.Time) {
	t := now.UnixNano()
	for {
		jobDue := int64(never)
		if s.jobs.running.Len() > 0 {
			jobDue = s.jobs.running[0].due
		}
		churnDue, create := s.churn.next()
		switch {
		case churnDue <= t && churnDue < jobDue:
			if create {
				s.churn.created++
				s.createServer(churnDue)
			} else {
				s.churn.deleted++
				s.deleteServer()
			}
		case jobDue <= t:
			s.endJob()
		default:
			return
		}
	}
}

// createServer adds a normal server on genKeypair at the top of the list,
// created at the instant at (unix nanoseconds). s.mu must be held.
func (s *Sim) createServer(at int64) {
	f := &s.fleet
	f.explicitOrder()
	id := newID(s.churn.rng)
	for _, dup := f.byID[id]; dup; _, dup = f.byID[id] {
		id = newID(s.churn.rng)
	}
	i := int32(len(f.state))
	f.byID[id] = i
	f.ids = append(f.ids, id)
	f.state = append(f.state, server{keypair: f.intern(genKeypair), status: cph.ServerStatusNormal})
	f.born = append(f.born, time.Unix(0, at).Unix())
	f.order = append(f.order, i)
	s.stats.serversCreated++
}

// deleteServer deletes a live server drawn uniformly at random, if any.
// Its jobs still running will fail when they end (see settle). s.mu must
// be held.
func (s *Sim) deleteServer() {
	f := &s.fleet
	n := f.len()
	if n == 0 {
		return
	}
	f.explicitOrder()
	k := len(f.order) - 1 - s.churn.rng.IntN(n) // a list position, reversed
	i := f.order[k]
	f.order = append(f.order[:k], f.order[k+1:]...)
	f.state[i].deleted = true
	f.deleted = append(f.deleted, i)
	s.stats.serversDeleted++
}

// explicitOrder makes a generated fleet's implicit index order explicit,
// before churn changes it.
func (f *fleet) explicitOrder() {
	if f.order != nil {
		return
	}
	f.order = make([]int32, len(f.state))
	for k := range f.order {
		f.order[k] = int32(len(f.state) - 1 - k)
	}
}

// SetChurn changes the rates at which servers are created and deleted, in
// servers per second (0: none). The events due under the old rates are
// applied first; the new rates count from now.
func (s *Sim) SetChurn(createRate, deleteRate float64) error {
	for _, r := range []float64{createRate, deleteRate} {
		if !(r >= 0) || math.IsInf(r, 1) {
			return fmt.Errorf("set churn: rate %v is not a finite number ≥ 0", r)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.settle(now)
	s.churn.createRate, s.churn.deleteRate = createRate, deleteRate
	s.churn.start, s.churn.created, s.churn.deleted = now.UnixNano(), 0, 0
	return nil
}

// Deleted reports whether churn has deleted serverID.
func (s *Sim) Deleted(serverID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(s.now())
	i, ok := s.fleet.byID[serverID]
	return ok && s.fleet.state[i].deleted
}

// DeletedServers lists the servers churn has deleted, in the order it
// deleted them.
func (s *Sim) DeletedServers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.settle(s.now())
	out := make([]string, len(s.fleet.deleted))
	for k, i := range s.fleet.deleted {
		out[k] = s.fleet.ids[i]
	}
	return out
}
