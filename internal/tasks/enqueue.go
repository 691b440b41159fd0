package tasks

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/hibiken/asynq"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/targets"
)

// Chunk size limits: one chunk's jobs must fit one ListJobs page, and a
// full chunk is what makes every call carry as many servers as it can.
const (
	DefaultChunkSize   = 100
	MaxChunkSize       = 100
	DefaultMaxAttempts = 3
)

// Target is a server to rotate and, optionally, a keypair of its own.
type Target struct {
	ServerID string
	Keypair  string // "" means the rotation's keypair
	// Place is where the server is; a Spec's targets are all in its
	// Place (SplitPlaces makes such Specs).
	Place Place
}

// Spec is what a rotation is asked to do.
type Spec struct {
	// ID names the rotation. Empty derives it from the fingerprint, so the
	// same command run twice names the same rotation.
	ID      string
	Keypair string
	// Place is where every target is; the zero Place is the workers'
	// default region and project.
	Place Place
	// Group names the rotation across places this one is a part of.
	Group string
	// RegionOrder orders the parts of a spec across places: these regions'
	// first (a canary region), the others in the order they appear.
	RegionOrder []string
	Targets     []Target
	ChunkSize   int
	MaxAttempts int
	// SkipMatching reads every target's current keypair first and reports
	// servers already on their target keypair as skipped. It is also what
	// records each server's old keypair, which a rollback needs.
	SkipMatching bool
	// Waves are canary waves (see ParseWaves); nil: one wave.
	Waves []Size
	// MaxErrors is the error budget; nil: DefaultMaxErrors.
	MaxErrors *Size
	// SkipVerify does not read keypairs back after jobs succeed.
	SkipVerify bool
	// PauseAfterWave pauses the rotation after each wave until resumed.
	PauseAfterWave bool
	// Retention keeps the rotation's records this long after it ends;
	// zero: the worker's default (TaskOptions.Retention).
	Retention time.Duration
	// Progress, when set, is told how MakePlan's read of the fleet goes
	// (SkipMatching), after each page. It is not part of the rotation.
	Progress func(PlanProgress)
	// Actor names who starts the rotation (ValidateActor), and
	// KeypairImported the places its keypair was just imported into; both
	// begin its history and are not part of its fingerprint.
	Actor           string
	KeypairImported []string
}

// PlanProgress is how far MakePlan's read of the fleet is.
type PlanProgress struct {
	cph.ListProgress
	// Targets counts the servers the Spec names; Matched those of them
	// the read has found so far.
	Targets, Matched int
}

func (s *Spec) maxErrors() Size {
	if s.MaxErrors == nil {
		return DefaultMaxErrors
	}
	return *s.MaxErrors
}

func (s *Spec) validate() error {
	if s.Keypair == "" {
		return errors.New("no keypair: --keypair is required")
	}
	if err := targets.ValidateKeypairName(s.Keypair); err != nil {
		return err
	}
	if s.ChunkSize < 1 || s.ChunkSize > MaxChunkSize {
		return fmt.Errorf("chunk size %d: want 1-%d", s.ChunkSize, MaxChunkSize)
	}
	if s.MaxAttempts < 1 || s.MaxAttempts > 20 {
		return fmt.Errorf("max attempts %d: want 1-20", s.MaxAttempts)
	}
	if len(s.Targets) == 0 {
		return errors.New("no target servers")
	}
	// Every path to Redis comes through here (files, discovery, rollback):
	// a server listed twice would hold its chunk attempt open for ever, and
	// tabs or newlines would corrupt the chunk encoding (keypairs are held
	// to what a keypair name may be).
	seen := make(map[string]bool, len(s.Targets))
	for i, t := range s.Targets {
		switch {
		case t.ServerID == "":
			return fmt.Errorf("target %d: empty server id", i+1)
		case strings.ContainsAny(t.ServerID, "\t\n\r"):
			return fmt.Errorf("target %d: server id %q contains a tab or line break", i+1, t.ServerID)
		case t.Place != s.Place:
			return fmt.Errorf("target %d: server %s is in %s, the rotation in %s (split the spec with SplitPlaces)", i+1, t.ServerID, t.Place, s.Place)
		case seen[t.ServerID]:
			return fmt.Errorf("target %d: server %s is listed twice", i+1, t.ServerID)
		}
		if t.Keypair != "" {
			if err := targets.ValidateKeypairName(t.Keypair); err != nil {
				return fmt.Errorf("target %d (%q): %w", i+1, t.ServerID, err)
			}
		}
		seen[t.ServerID] = true
	}
	if len(s.Waves) > MaxWaves {
		return fmt.Errorf("%d waves: at most %d", len(s.Waves), MaxWaves)
	}
	for i, w := range s.Waves {
		if w.N < 1 || w.Percent && w.N > 100 {
			return fmt.Errorf("wave %d: size %s: want at least 1 server, at most 100%%", i+1, w)
		}
	}
	if b := s.maxErrors(); b.N < 0 || b.Percent && b.N > 100 {
		return fmt.Errorf("max errors %s: want a number of servers or a percentage up to 100%%", b)
	}
	if s.Retention < 0 {
		return fmt.Errorf("retention %s: want a positive duration", s.Retention)
	}
	if err := ValidateActor(s.Actor); err != nil {
		return err
	}
	if s.ID != "" {
		return ValidateRotationID(s.ID)
	}
	return nil
}

// Fingerprint identifies the work a Spec asks for: keypair, options and
// the sorted target list.
func (s *Spec) Fingerprint() string {
	ts := make([]string, len(s.Targets))
	for i, t := range s.Targets {
		ts[i] = t.ServerID + "\t" + t.Keypair
		if !t.Place.IsZero() {
			// Only then, so rotations of one place keep the ids they had.
			ts[i] += "\t" + t.Place.String()
		}
	}
	sort.Strings(ts)
	h := sha256.New()
	fmt.Fprintf(h, "%s\n%d\n%d\n%t\n%v\n%s\n%t\n%t\n", s.Keypair, s.ChunkSize, s.MaxAttempts, s.SkipMatching,
		s.Waves, s.maxErrors(), s.SkipVerify, s.PauseAfterWave)
	for _, t := range ts {
		h.Write([]byte(t))
		h.Write([]byte{'\n'})
	}
	if !s.Place.IsZero() || s.Group != "" {
		// Only then, so rotations of one place keep the ids they had.
		fmt.Fprintf(h, "place %s %s %s\n", s.Place.Region, s.Place.ProjectID, s.Group)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// SplitPlaces splits a spec whose targets are in several places into one
// spec a place, in the order the places first appear: the parts of a
// group whose id is the spec's ID, or one derived from its fingerprint as
// a rotation's is. A spec of one place is returned as it is, with its
// Place set, and no group.
func SplitPlaces(s Spec) (group string, parts []Spec, err error) {
	var places []Place
	byPlace := map[Place][]Target{}
	for _, t := range s.Targets {
		if _, ok := byPlace[t.Place]; !ok {
			places = append(places, t.Place)
		}
		byPlace[t.Place] = append(byPlace[t.Place], t)
	}
	if len(places) <= 1 {
		if len(places) == 1 {
			s.Place = places[0]
		}
		return "", []Spec{s}, nil
	}
	rank := func(p Place) int {
		if i := slices.Index(s.RegionOrder, p.Region); i >= 0 {
			return i
		}
		return len(s.RegionOrder)
	}
	slices.SortStableFunc(places, func(a, b Place) int { return cmp.Compare(rank(a), rank(b)) })
	group = s.ID
	if group == "" {
		group = "r-" + s.Fingerprint()[:16]
	}
	for i, p := range places {
		part := s
		part.ID, part.Group, part.Place, part.Targets = PartID(group, i+1), group, p, byPlace[p]
		if err := ValidateRotationID(part.ID); err != nil {
			return "", nil, fmt.Errorf("rotation %s spans %d places, and its parts' ids (%s) would be too long: %w", group, len(places), part.ID, err)
		}
		parts = append(parts, part)
	}
	return group, parts, nil
}

// ServerLister lists servers page by page, each server once, in list
// order, the places counted in order being those of one list (cph.Client
// does).
type ServerLister interface {
	ListServers(ctx context.Context, f cph.ServerFilter, fn func([]cph.Server) error) error
}

// Enqueuer enqueues asynq tasks (asynq.Client does).
type Enqueuer interface {
	EnqueueContext(ctx context.Context, t *asynq.Task, opts ...asynq.Option) (*asynq.TaskInfo, error)
}

// Plan is a rotation resolved against the fleet: the chunks to submit,
// grouped into waves (Rotation.Waves), and the servers that need nothing.
type Plan struct {
	Rotation *Rotation
	Chunks   [][]Entry
	Skipped  []Entry // already on their target keypair
	NotFound []Entry // not listed by the API: submitted anyway, so the API's own answer is reported
	Abnormal []Entry // listed, but not in the normal status: their jobs will fail
	// Read reports whether current keypairs were read (SkipMatching).
	Read bool
}

// Servers is the number of servers the plan submits.
func (p *Plan) Servers() int {
	n := 0
	for _, c := range p.Chunks {
		n += len(c)
	}
	return n
}

// MakePlan validates spec and, with SkipMatching, reads every target's
// current keypair, status and place through ListCloudPhoneServers pages
// (one call per 100 servers of the fleet, never one per target). Each
// wave's servers are then chunked in the order the list gives them, so
// verification reads the few pages a chunk spans (one, when a chunk is a
// whole page) instead of one server at a time.
func MakePlan(ctx context.Context, spec Spec, lister ServerLister) (*Plan, error) {
	if err := spec.validate(); err != nil {
		return nil, err
	}
	fp := spec.Fingerprint()
	id := spec.ID
	if id == "" {
		id = "r-" + fp[:16]
	}
	plan := &Plan{Read: spec.SkipMatching, Rotation: &Rotation{ID: id, Keypair: spec.Keypair, Region: spec.Place.Region,
		ProjectID: spec.Place.ProjectID, Group: spec.Group, ChunkSize: spec.ChunkSize,
		MaxAttempts: spec.MaxAttempts, Fingerprint: fp, Verify: !spec.SkipVerify, PauseAfterWave: spec.PauseAfterWave,
		Retention: spec.Retention, actor: spec.Actor}}
	if n := len(spec.KeypairImported); n > 0 {
		projects := "projects"
		if n == 1 {
			projects = "project"
		}
		plan.Rotation.imported = fmt.Sprintf("keypair %s imported into KPS in %d %s: %s",
			spec.Keypair, n, projects, strings.Join(spec.KeypairImported, ", "))
	}
	type current struct {
		keypair string
		status  int
		pos     int
	}
	var fleet map[string]current
	if spec.SkipMatching {
		want := make(map[string]bool, len(spec.Targets))
		for _, t := range spec.Targets {
			want[t.ServerID] = true
		}
		fleet = make(map[string]current, len(spec.Targets))
		// The lister hands each server over once, in list order, so the
		// count of those before it is a server's place in one list, as
		// verification expects.
		var f cph.ServerFilter
		if spec.Progress != nil {
			f.Progress = func(p cph.ListProgress) {
				spec.Progress(PlanProgress{ListProgress: p, Targets: len(spec.Targets), Matched: len(fleet)})
			}
		}
		pos := 0
		err := lister.ListServers(ctx, f, func(page []cph.Server) error {
			for _, s := range page {
				if want[s.ServerID] {
					fleet[s.ServerID] = current{knownKeypair(s.KeypairName), s.Status, pos}
				}
				pos++
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("read current keypairs: %w", err)
		}
		plan.Rotation.listCount = pos
	}
	var submit []Entry
	for _, t := range spec.Targets {
		e := Entry{ServerID: t.ServerID, Keypair: t.Keypair, Attempt: 1, Pos: -1}
		if e.Keypair == "" {
			e.Keypair = spec.Keypair
		}
		if fleet != nil {
			cur, ok := fleet[t.ServerID]
			e.OldKeypair = cur.keypair
			if ok {
				e.Pos = cur.pos
			}
			switch {
			case !ok:
				plan.NotFound = append(plan.NotFound, e)
			case cur.keypair == e.Keypair:
				plan.Skipped = append(plan.Skipped, e)
				continue
			case cur.status != cph.ServerStatusNormal:
				plan.Abnormal = append(plan.Abnormal, e)
			}
		}
		submit = append(submit, e)
	}
	// A wave is whole chunks: its last chunk may be short. Within a wave
	// the list's order (servers not listed last) makes chunks of
	// neighbouring pages; the waves themselves keep the input's order, so a
	// canary is the servers the operator put first.
	plan.Rotation.Positions = fleet != nil
	for _, n := range waveServers(spec.Waves, len(submit)) {
		wave := submit[:n]
		submit = submit[n:]
		if fleet != nil {
			slices.SortStableFunc(wave, func(a, b Entry) int { return cmp.Compare(uint(a.Pos), uint(b.Pos)) })
		}
		for len(wave) > 0 {
			c := min(spec.ChunkSize, len(wave))
			plan.Chunks = append(plan.Chunks, wave[:c:c])
			wave = wave[c:]
		}
		plan.Rotation.Waves = append(plan.Rotation.Waves, Wave{LastChunk: len(plan.Chunks), Servers: n})
	}
	plan.Rotation.Chunks = len(plan.Chunks)
	plan.Rotation.Batches = len(plan.Chunks)
	plan.Rotation.MaxErrors = spec.maxErrors().Floor(plan.Servers())
	return plan, nil
}

// knownKeypair is the keypair name the API listed for a server, or "" when
// it is not a keypair name (letters, digits, '_' and '-', at most 64
// bytes). The name is packed into the tab- and newline-separated chunk
// records and the report: an endpoint must not forge entries through it.
// A server on a name no keypair can have is not on the target, so it is
// rotated, and its old keypair is reported unknown (rollback refuses it).
func knownKeypair(name string) string {
	if targets.ValidateKeypairName(name) != nil {
		return ""
	}
	return name
}

// Started is what Start did.
type Started struct {
	Rotation *Rotation
	Created  bool // false: the rotation already existed (a re-run)
	Enqueued int  // submit tasks enqueued now
}

// Start freezes plan into a rotation record and enqueues one submit task
// per chunk that has not been submitted yet. Running it again for the same
// rotation enqueues nothing twice: task IDs are deterministic and chunks
// with a checkpoint are left to their polls.
func Start(ctx context.Context, store *Store, enq Enqueuer, plan *Plan, opts TaskOptions, now time.Time) (*Started, error) {
	created, err := store.Create(ctx, plan.Rotation, plan.Chunks, plan.Skipped, now)
	if err != nil {
		return nil, err
	}
	rot, err := store.Rotation(ctx, plan.Rotation.ID)
	if err != nil {
		return nil, err
	}
	st := &Started{Rotation: rot, Created: created}
	if rot.Finished() {
		// Every server was skipped: nothing to submit, but the completion
		// event and the retention are due as for any rotation.
		return st, finish(ctx, store, enq, rot, created, opts)
	}
	if !created {
		// A re-run revives a rotation whose tick was lost.
		if err := wake(ctx, store, enq, rot.ID, opts, now); err != nil {
			return st, err
		}
	}
	if rot.State != StateRunning {
		return st, nil // paused or halted: resume enqueues what is left
	}
	st.Enqueued, err = topUp(ctx, store, enq, rot, opts)
	return st, err
}

// wake starts a tick chain for a rotation with work in flight and no live
// chain.
func wake(ctx context.Context, store *Store, enq Enqueuer, id string, opts TaskOptions, now time.Time) error {
	gen, err := store.Wake(ctx, id, now, now)
	if err != nil || gen == 0 {
		return err
	}
	_, err = enqueueTick(ctx, enq, store.ns, TickPayload{Rotation: id, Gen: gen, Seq: 1}, 0, opts)
	return err
}

// submitAhead is how many chunks of a wave wait in the submit queue at a
// time: as one is submitted, the next is enqueued (topUp). Enough to keep
// a CPH quota busy at a real round trip (16 calls in flight at 300 ms is
// 50 a second), few enough that the fleet limiter grants them within its
// MaxWait at 10 a second. A whole wave enqueued at once would not
// keep its order: chunks waiting longer than MaxWait go back to the end
// of the queue, and the order in which chunks are submitted is the order
// in which neighbouring pages of the list can be verified together.
// It also bounds the tasks of a paused rotation that wake to look again,
// and how long a start of a huge wave takes.
const submitAhead = 16

// topUp enqueues the first attempts of the current wave's next chunks, so
// that submitAhead of them are enqueued and not yet submitted, and
// reports how many it enqueued. It runs at the start, after every submit,
// in every tick and on resume; task IDs are deterministic and chunks with
// a checkpoint or a started call are left to their own tasks, so running
// it twice, or in two processes at once, enqueues nothing twice.
func topUp(ctx context.Context, store *Store, enq Enqueuer, rot *Rotation, opts TaskOptions) (int, error) {
	if rot.State != StateRunning {
		return 0, nil
	}
	first, last := rot.chunksOf(rot.Wave)
	from, to := max(first, rot.queued+1), min(last, rot.sent+submitAhead)
	if rot.waveQueued < rot.Wave {
		from = first // a wave's start: queued may be from a release that kept none
	}
	n := 0
	for c := from; c <= to; c++ {
		b, err := store.Batch(ctx, rot.ID, c)
		if err != nil {
			return n, err
		}
		if b.Checkpointed || b.Intents > 0 {
			continue // submitted, or being submitted: its own task carries on
		}
		ok, err := enqueueSubmit(ctx, enq, store.ns.Queue(QueueSubmit), SubmitPayload{Rotation: rot.ID, Batch: c, Servers: len(b.Servers)}, opts)
		if err != nil {
			return n, err
		}
		if ok {
			n++
		}
	}
	if from > to && rot.waveQueued >= rot.Wave {
		return 0, nil
	}
	return n, store.Queued(ctx, rot.ID, rot.Wave, max(to, from-1))
}

// Resume sets a paused rotation, or one halted by its error budget or by
// refused credentials (a 401 or 403), running again, restarts its tick
// chain if it ended, and enqueues what its current wave has left to submit.
// maxErrors, when not nil, replaces the error budget (a percentage is of
// the servers the rotation submits); resuming is refused while the failed
// count is still beyond the budget. The history records actor resuming it.
func Resume(ctx context.Context, store *Store, enq Enqueuer, id string, maxErrors *Size, actor string, opts TaskOptions) (*Rotation, int, error) {
	rot, err := store.Rotation(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	limit := -1
	if maxErrors != nil {
		limit = maxErrors.Floor(int(rot.Counts.Total - rot.Counts.Skipped))
	}
	lifts := int64(-1)
	if rot.Group != "" {
		g, err := store.Group(ctx, rot.Group)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return nil, 0, err
		}
		if g != nil {
			lifts = g.Lifts
		}
	}
	if _, err := store.Resume(ctx, id, limit, actor, lifts); err != nil {
		return nil, 0, err
	}
	rot, err = store.Rotation(ctx, id)
	if err != nil {
		return nil, 0, err
	}
	// The submit tasks go first: a tick woken first would top the wave up
	// itself, and the count this call reports would say nothing was left.
	again, err := requeue(ctx, store, enq, rot, opts, nil)
	if err != nil {
		return rot, len(again), err
	}
	n, err := topUp(ctx, store, enq, rot, opts)
	if err != nil {
		return rot, len(again) + n, err
	}
	return rot, len(again) + n, wake(ctx, store, enq, id, opts, time.Now())
}

// requeue enqueues again the submit tasks that a pause or a halt ended, or
// that were lost: those of the chunks enqueued and not submitted yet, and
// of the retry batches formed. A task still there is refused by its ID;
// one archived keeps its ID until clear (nil: none) deletes it. It returns
// the batches enqueued.
func requeue(ctx context.Context, store *Store, enq Enqueuer, rot *Rotation, opts TaskOptions, clear func(queue, taskID string) error) ([]int, error) {
	if rot.State != StateRunning {
		return nil, nil
	}
	chunks, err := store.UnsentChunks(ctx, rot.ID, rot.queued)
	if err != nil {
		return nil, err
	}
	retries, err := store.Fresh(ctx, rot.ID)
	if err != nil {
		return nil, err
	}
	var out []int
	for _, n := range append(chunks, retries...) {
		queue := store.ns.Queue(QueueSubmit)
		if n > rot.Chunks {
			queue = store.ns.Queue(QueuePoll) // retry batches go with the work already started
		}
		if clear != nil {
			if err := clear(queue, SubmitTaskID(rot.ID, n)); err != nil {
				return out, err
			}
		}
		b, err := store.Batch(ctx, rot.ID, n)
		if err != nil {
			return out, err
		}
		if b.Checkpointed || b.Intents > 0 || len(b.Servers) == 0 {
			continue // submitted, or being submitted: its own task carries on
		}
		ok, err := enqueueSubmit(ctx, enq, queue, SubmitPayload{Rotation: rot.ID, Batch: n, Servers: len(b.Servers)}, opts)
		if err != nil {
			return out, err
		}
		if ok {
			out = append(out, n)
		}
	}
	return out, nil
}

// Cancel cancels a rotation for actor (see Store.Cancel) and, when that
// leaves nothing running, runs the finished rotation's follow-ups at once.
func Cancel(ctx context.Context, store *Store, enq Enqueuer, id, actor string, opts TaskOptions, now time.Time) (*Rotation, int, error) {
	closed, finished, err := store.Cancel(ctx, id, actor, now)
	if err != nil {
		return nil, closed, err
	}
	rot, err := store.Rotation(ctx, id)
	if err != nil {
		return nil, closed, err
	}
	if rot.Finished() {
		return rot, closed, finish(ctx, store, enq, rot, finished, opts)
	}
	return rot, closed, nil
}

// TaskOptions are the asynq options of the pipeline's tasks.
type TaskOptions struct {
	// MaxRetry is how many API-level transient failures (5xx, timeouts) of
	// one task are retried before the handler gives up on the API and
	// records the chunk's servers as failed. Rate-limit waits, 429s and
	// dead workers do not count. The handler counts, not asynq: asynq
	// archives a task that returns any error on its last retry, before it
	// asks IsFailure, which would strand the chunk's servers.
	MaxRetry int
	// Timeout bounds one run of a task; handlers honour it through ctx.
	Timeout time.Duration
	// Retention keeps finished rotations' records and events this long.
	Retention time.Duration
}

// neverArchive is the asynq MaxRetry of the pipeline's tasks: asynq must
// always hand a task back, and the handler decides when to give up (see
// TaskOptions.MaxRetry).
const neverArchive = math.MaxInt32

func (o TaskOptions) withDefaults() TaskOptions {
	if o.MaxRetry <= 0 {
		o.MaxRetry = 25
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Retention <= 0 {
		o.Retention = 30 * 24 * time.Hour
	}
	return o
}

// enqueueSubmit enqueues a batch's submit task on queue; it reports false
// when the task is already there.
func enqueueSubmit(ctx context.Context, enq Enqueuer, queue string, p SubmitPayload, opts TaskOptions) (bool, error) {
	opts = opts.withDefaults()
	p.V = SchemaVersion
	return enqueue(ctx, enq, TypeSubmit, p, SubmitTaskID(p.Rotation, p.Batch),
		asynq.Queue(queue), asynq.MaxRetry(neverArchive), asynq.Timeout(opts.Timeout))
}

// enqueueTick enqueues a rotation's tick on ns's poll queue; it reports
// false when the task is already there.
func enqueueTick(ctx context.Context, enq Enqueuer, ns Namespace, p TickPayload, delay time.Duration, opts TaskOptions) (bool, error) {
	opts = opts.withDefaults()
	p.V = SchemaVersion
	return enqueue(ctx, enq, TypeTick, p, TickTaskID(p.Rotation, p.Gen, p.Seq),
		asynq.Queue(ns.Queue(QueuePoll)), asynq.MaxRetry(neverArchive), asynq.Timeout(opts.Timeout), asynq.ProcessIn(delay))
}

func enqueue(ctx context.Context, enq Enqueuer, typ string, payload any, id string, opts ...asynq.Option) (bool, error) {
	data, err := marshal(payload)
	if err != nil {
		return false, err
	}
	_, err = enq.EnqueueContext(ctx, asynq.NewTask(typ, data), append(opts, asynq.TaskID(id))...)
	if errors.Is(err, asynq.ErrTaskIDConflict) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("enqueue %s %s: %w", typ, id, err)
	}
	return true, nil
}
