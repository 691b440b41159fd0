package tasks

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// planKey is a STRING: the plan the rotation's first start froze (see
// freezePlan), written before any chunk.
func (s *Store) planKey(id string) string { return s.prefix + "{" + id + "}:plan" }

// PlanSize is what a plan submits: chunks, their servers, and the servers
// skipped at planning time.
type PlanSize struct {
	Chunks, Servers, Skipped int
}

func (p PlanSize) String() string {
	return fmt.Sprintf("%d chunks of %d servers, %d skipped", p.Chunks, p.Servers, p.Skipped)
}

// PlanChangedError is a start refused because an earlier start of the same
// rotation was cut short while it wrote another plan: the fleet it read has
// changed since (servers created, deleted or moved to the target keypair),
// so the plans differ. Completing the first plan with this one's chunks
// would put a server in two chunks and another in none; nothing of the
// first plan was submitted (no record, no task).
type PlanChangedError struct {
	Rotation    string
	First, This PlanSize
	// Difference names the first chunk that differs and how.
	Difference string
}

func (e *PlanChangedError) Error() string {
	return fmt.Sprintf("rotation %s: an interrupted start froze another plan (%s; this start planned %s): %s; "+
		"nothing was submitted: discard the interrupted start (enqueue discard %s) and start again, or start this plan under another --rotation-id",
		e.Rotation, e.First, e.This, e.Difference, e.Rotation)
}

// Unwrap makes a changed plan a conflict: the id is taken by other work.
func (e *PlanChangedError) Unwrap() error { return ErrConflict }

// planDigest identifies a plan by all it writes that decides what is
// submitted: every chunk's entries (server, old keypair, target keypair,
// place in the list), the skipped servers, the waves and the budget.
func planDigest(r *Rotation, chunks [][]Entry, skipped []Entry) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%v\n%d\n%t\n", r.Fingerprint, r.Waves, r.MaxErrors, r.Positions)
	for _, c := range chunks {
		h.Write([]byte(encodeEntries(c)))
		h.Write([]byte{0})
	}
	h.Write([]byte(encodeEntries(skipped)))
	return hex.EncodeToString(h.Sum(nil))
}

func planSize(chunks [][]Entry, skipped []Entry) PlanSize {
	p := PlanSize{Chunks: len(chunks), Skipped: len(skipped)}
	for _, c := range chunks {
		p.Servers += len(c)
	}
	return p
}

// freezeScript sets a plan unless one is set, and returns the one set
// before (nil: none). SET NX GET would do, from Redis 7.0 on.
var freezeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1])
return false
`)

// freezePlan claims the rotation's plan for this one before any of it is
// written, so that a start cut short and run again, or two starts at once,
// either write the same plan or the later is refused: chunks are written
// set-if-absent, and two plans would mix. It returns a *PlanChangedError
// when another plan was frozen first.
func (s *Store) freezePlan(ctx context.Context, r *Rotation, chunks [][]Entry, skipped []Entry) error {
	size := planSize(chunks, skipped)
	mine := strings.Join([]string{planDigest(r, chunks, skipped), strconv.Itoa(size.Chunks), strconv.Itoa(size.Servers), strconv.Itoa(size.Skipped)}, "\t")
	prev, err := freezeScript.Run(ctx, s.rdb, []string{s.planKey(r.ID)}, mine).Text()
	switch {
	case errors.Is(err, redis.Nil):
		return nil // frozen now
	case err != nil:
		return fmt.Errorf("create rotation %s: freeze its plan: %w", r.ID, err)
	case prev == mine:
		return nil // the same plan: this start completes it
	}
	f := strings.Split(prev, "\t")
	e := &PlanChangedError{Rotation: r.ID, This: size}
	if len(f) == 4 {
		e.First.Chunks, _ = strconv.Atoi(f[1])
		e.First.Servers, _ = strconv.Atoi(f[2])
		e.First.Skipped, _ = strconv.Atoi(f[3])
	}
	if f[0] == discarding {
		e.Difference = "a discard of it was cut short (run it again)"
		return e
	}
	if e.Difference, err = s.planDifference(ctx, r.ID, chunks); err != nil {
		return err
	}
	return e
}

// planDifference names the first chunk a start cut short wrote that differs
// from chunks.
func (s *Store) planDifference(ctx context.Context, id string, chunks [][]Entry) (string, error) {
	const page = 500
	written := 0
	for from := 0; from < len(chunks); from += page {
		pipe := s.rdb.Pipeline()
		var cmds []*redis.StringCmd
		for i := from; i < min(from+page, len(chunks)); i++ {
			cmds = append(cmds, pipe.HGet(ctx, s.batchKey(id, i+1), "servers"))
		}
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return "", fmt.Errorf("rotation %s: compare plans: %w", id, err)
		}
		for k, cmd := range cmds {
			enc, err := cmd.Result()
			if errors.Is(err, redis.Nil) {
				continue // not written before the cut
			}
			written++
			first, err := decodeEntries(enc)
			if err != nil {
				return "", fmt.Errorf("rotation %s: compare plans: %w", id, err)
			}
			if d := chunkDifference(first, chunks[from+k]); d != "" {
				return "chunk " + strconv.Itoa(from+k+1) + " " + d, nil
			}
		}
	}
	if written == 0 {
		return "it was cut short before it wrote a chunk", nil
	}
	return "the chunks it wrote are this plan's; the others, the skipped servers, the waves or the budget differ", nil
}

// chunkDifference says how chunk this differs from first ("" if it does
// not): the servers only one of them holds, or the servers whose old
// keypair or place in the list changed.
func chunkDifference(first, this []Entry) string {
	in := func(es []Entry) map[string]Entry {
		m := make(map[string]Entry, len(es))
		for _, e := range es {
			m[e.ServerID] = e
		}
		return m
	}
	a, b := in(first), in(this)
	var gone, added, moved []string
	for _, e := range first {
		o, ok := b[e.ServerID]
		switch {
		case !ok:
			gone = append(gone, e.ServerID)
		case o.OldKeypair != e.OldKeypair:
			moved = append(moved, fmt.Sprintf("%s on keypair %q then, %q now", e.ServerID, e.OldKeypair, o.OldKeypair))
		case o != e:
			moved = append(moved, fmt.Sprintf("%s at place %d in the list then, %d now", e.ServerID, e.Pos, o.Pos))
		}
	}
	for _, e := range this {
		if _, ok := a[e.ServerID]; !ok {
			added = append(added, e.ServerID)
		}
	}
	var parts []string
	if len(gone) > 0 {
		parts = append(parts, "held "+few(gone)+" that this plan puts elsewhere or skips")
	}
	if len(added) > 0 {
		parts = append(parts, "now holds "+few(added)+" that it did not")
	}
	if len(moved) > 0 {
		parts = append(parts, "holds "+few(moved))
	}
	return strings.Join(parts, ", ")
}

// few lists up to three names and how many more there are.
func few(names []string) string {
	if len(names) <= 3 {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:3], ", ") + " and " + strconv.Itoa(len(names)-3) + " more"
}

// ErrNoPlan is returned by Discard for a rotation id with neither a
// record nor a plan: nothing to discard. It comes with ErrNotFound.
var ErrNoPlan = errors.New("no interrupted start to discard")

// discarding marks a plan being discarded: in place of its digest, so a
// start of the rotation run meanwhile is refused (its plan differs), and
// the count of chunks stays for a discard cut short and run again.
const discarding = "discarding"

// discardScript deletes keys of a rotation whose start was cut short
// before its record was written: it refuses (EXISTS) once the record
// exists. KEYS: meta, plan, then the keys to delete. ARGV: the plan's
// value while discarding, and 1 to delete the plan itself (the last call).
var discardScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then return redis.error_reply('EXISTS') end
redis.call('SET', KEYS[2], ARGV[1])
for i = 3, #KEYS do redis.call('DEL', KEYS[i]) end
if ARGV[2] == '1' then redis.call('DEL', KEYS[2]) end
return 0
`)

// Discard removes what a start cut short before the rotation's record was
// written left behind: the frozen plan, its chunks, the skipped servers'
// records and verification's page counts. Nothing of it was enqueued or
// submitted (Start enqueues only once the record exists, and a task of a
// rotation without one ends), so a start of another plan may use the id
// afterwards. It refuses with ErrConflict once the record exists (cancel
// is the way out of a rotation that started), and returns ErrNoPlan when
// there is nothing to discard. It deletes up to 500 keys a script call, and
// can be run again if cut short; a start run meanwhile is refused. It
// returns the size of the plan discarded.
func (s *Store) Discard(ctx context.Context, id string) (PlanSize, error) {
	if err := ValidateRotationID(id); err != nil {
		return PlanSize{}, err
	}
	exists := func() error {
		return fmt.Errorf("rotation %s has started (its record exists): only a start cut short before that can be discarded; cancel it instead: %w", id, ErrConflict)
	}
	pipe := s.rdb.Pipeline()
	meta := pipe.Exists(ctx, s.metaKey(id))
	plan := pipe.Get(ctx, s.planKey(id))
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return PlanSize{}, fmt.Errorf("discard %s: %w", id, err)
	}
	if meta.Val() == 1 {
		return PlanSize{}, exists()
	}
	v, err := plan.Result()
	if errors.Is(err, redis.Nil) {
		return PlanSize{}, fmt.Errorf("rotation %s: %w (%w)", id, ErrNoPlan, ErrNotFound)
	}
	f := strings.Split(v, "\t")
	var size PlanSize
	if len(f) == 4 {
		size.Chunks, _ = strconv.Atoi(f[1])
		size.Servers, _ = strconv.Atoi(f[2])
		size.Skipped, _ = strconv.Atoi(f[3])
	}
	mark := strings.Join([]string{discarding, strconv.Itoa(size.Chunks), strconv.Itoa(size.Servers), strconv.Itoa(size.Skipped)}, "\t")
	// The chunks last: the other keys hold little, and the plan's chunk
	// count stays until the last chunk is gone.
	keys := []string{s.recordsKey(id), s.pagesKey(id), s.whereKey(id), s.pollsKey(id), s.retryKey(id), s.verifyKey(id),
		s.freshKey(id), s.statsKey(id), s.vfailKey(id)}
	for n := 0; n <= size.Chunks; n++ {
		keys = append(keys, s.batchKey(id, n))
	}
	const per = 500
	for len(keys) > 0 {
		k := min(per, len(keys))
		last := flag(k == len(keys))
		err := discardScript.Run(ctx, s.rdb, append([]string{s.metaKey(id), s.planKey(id)}, keys[:k]...), mark, last).Err()
		if err != nil && err.Error() == "EXISTS" {
			return PlanSize{}, exists()
		}
		if err != nil {
			return PlanSize{}, fmt.Errorf("discard %s: %w", id, err)
		}
		keys = keys[k:]
	}
	return size, nil
}
