package tasks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// Group is a rotation across places: one rotation a place (its parts),
// started together under one id, each with its own endpoint, quota, error
// budget and controls, as a CloudFormation StackSet operation has a stack
// instance a region. The group adds what spans the parts: how many run at
// once, an error budget over all of them, and what the others do when one
// halts.
type Group struct {
	ID          string
	Fingerprint string
	// Parts are the part rotations' ids, in the order they were planned
	// (the region order first).
	Parts []string
	// MaxConcurrent is how many parts run at once (0: all); the others
	// wait, paused with WaitReason, and start in order as parts finish.
	MaxConcurrent int
	// MaxErrors is the rotation-wide error budget, in servers: one more
	// failed server across all parts halts every part. -1: none (each
	// part's own budget only).
	MaxErrors int
	// OnHalt is what the other parts do when one halts (its own budget, or
	// refused credentials).
	OnHalt HaltPolicy
	// Halted says why the whole rotation is halted ("": it is not): its
	// rotation-wide budget, or a part that halted under HaltAll. It is
	// cleared by ResumeGroup.
	Halted string
	// Lifts counts the resumes that lifted the group's halt. A part's
	// resume records it, and a halt for the group read before a later lift
	// (a task that read the group halted just before a resume of the
	// whole) leaves a part resumed since running (Store.HaltForGroup).
	Lifts     int64
	CreatedAt time.Time
}

// HaltPolicy is what the other parts of a group do when one halts.
type HaltPolicy string

// Halt policies. HaltAll is CloudFormation StackSets' behaviour (a region
// past its failure tolerance stops the operation: no later region is
// attempted) and the default; HaltAlone lets the others finish. Groups
// written before policies existed are HaltAlone, as they behaved.
const (
	HaltAll   HaltPolicy = "halt"
	HaltAlone HaltPolicy = "continue"
)

// ParseHaltPolicy reads "halt" or "continue" ("": HaltAll).
func ParseHaltPolicy(s string) (HaltPolicy, error) {
	switch p := HaltPolicy(strings.TrimSpace(s)); p {
	case "":
		return HaltAll, nil
	case HaltAll, HaltAlone:
		return p, nil
	}
	return "", fmt.Errorf("%q: want halt (every part halts with the one that halted) or continue (the others finish)", s)
}

// WaitReason is the reason of a part waiting for its turn.
const WaitReason = "waiting for its turn (--max-concurrent-regions)"

// Waiting reports whether the rotation is a part waiting for its turn.
func (r *Rotation) Waiting() bool {
	return r.Group != "" && r.State == StatePaused && r.Reason == WaitReason && !r.Finished()
}

// PartID names part n (1-based) of group id.
func PartID(group string, n int) string { return group + "." + strconv.Itoa(n) }

// GroupFinishedTaskID is the task id of a group's own completion event,
// which names the group where its parts' name themselves.
func GroupFinishedTaskID(group string) string { return FinishedTaskID(group) }

// createGroupScript writes a group unless one exists: 0 created, 1 the
// same group (same fingerprint) exists, -1 the id names other work.
var createGroupScript = redis.NewScript(`
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if fp then
  if fp == ARGV[1] then return 1 end
  return -1
end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'created_at', ARGV[2], 'parts', ARGV[3], 'max_concurrent', ARGV[4],
  'max_errors', ARGV[5], 'on_halt', ARGV[6])
return 0
`)

// CreateGroup writes g unless it exists: created is false for the same
// group written before, and the error ErrConflict when g.ID is taken by
// other work. Its parts are created apart (Create), after it.
func (s *Store) CreateGroup(ctx context.Context, g *Group) (created bool, err error) {
	maxErrors := g.MaxErrors
	if maxErrors < 0 {
		maxErrors = -1
	}
	onHalt := g.OnHalt
	if onHalt == "" {
		onHalt = HaltAll
	}
	res, err := createGroupScript.Run(ctx, s.rdb, []string{s.groupKey(g.ID)},
		g.Fingerprint, g.CreatedAt.UnixMilli(), strings.Join(g.Parts, ","), g.MaxConcurrent, maxErrors, string(onHalt)).Int()
	switch {
	case err != nil:
		return false, fmt.Errorf("create group %s: %w", g.ID, err)
	case res == -1:
		return false, fmt.Errorf("rotation %s: %w", g.ID, ErrConflict)
	}
	return res == 0, nil
}

// Group reads the group id: ErrNotFound when there is none.
func (s *Store) Group(ctx context.Context, id string) (*Group, error) {
	m, err := s.rdb.HGetAll(ctx, s.groupKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read group %s: %w", id, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	ms, _ := strconv.ParseInt(m["created_at"], 10, 64)
	n, _ := strconv.Atoi(m["max_concurrent"])
	g := &Group{ID: id, Fingerprint: m["fingerprint"], Parts: strings.Split(m["parts"], ","), MaxConcurrent: n,
		MaxErrors: -1, OnHalt: HaltPolicy(m["on_halt"]), Halted: m["halted"], CreatedAt: time.UnixMilli(ms).UTC()}
	if v, ok := m["max_errors"]; ok {
		g.MaxErrors, _ = strconv.Atoi(v)
	}
	g.Lifts, _ = strconv.ParseInt(m["lifts"], 10, 64)
	if g.OnHalt == "" {
		g.OnHalt = HaltAlone
	}
	return g, nil
}

// groupFailedLua sums the failed counts the group's parts have reported
// (fields f:<part>) into sum. KEYS[1]: the group.
const groupFailedLua = `
local sum = 0
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
  if string.sub(all[i], 1, 2) == 'f:' then sum = sum + tonumber(all[i + 1]) end
end
`

// groupFailedScript records that part ARGV[1] has ARGV[2] failed servers
// (a count only grows: an older report is ignored), and halts the group
// once the sum over its parts goes beyond its budget. Returns the sum, and
// 1 if this call halted the group. KEYS: group.
var groupFailedScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local f = 'f:' .. ARGV[1]
if tonumber(ARGV[2]) > tonumber(redis.call('HGET', KEYS[1], f) or '0') then redis.call('HSET', KEYS[1], f, ARGV[2]) end
` + groupFailedLua + `
local maxe = tonumber(redis.call('HGET', KEYS[1], 'max_errors') or '-1')
if maxe >= 0 and sum > maxe and redis.call('HEXISTS', KEYS[1], 'halted') == 0 then
  redis.call('HSET', KEYS[1], 'halted', 'rotation-wide error budget exceeded: ' .. sum .. ' failed > max ' .. maxe ..
    ' across its parts; resume the rotation with a larger --max-errors-total, or cancel')
  return {sum, 1}
end
return {sum, 0}
`)

// GroupFailed records that part has failed servers, and reports whether
// that halted the group: the rotation-wide budget is exceeded. Every
// failure is counted by the part that recorded it (its own counter, moved
// atomically with the outcome), and the group only ever takes a part's
// latest count, so two parts reporting at once, or a report repeated
// after a crash, count nothing twice.
func (s *Store) GroupFailed(ctx context.Context, group, part string, failed int64) (halted bool, err error) {
	v, err := groupFailedScript.Run(ctx, s.rdb, []string{s.groupKey(group)}, part, failed).Int64Slice()
	if err != nil {
		return false, fmt.Errorf("count failures of %s in %s: %w", part, group, err)
	}
	return v[1] == 1, nil
}

// haltGroupScript halts a group with a reason unless it is halted. KEYS:
// group. ARGV: reason. Returns 1 if it halted it now.
var haltGroupScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
return redis.call('HSETNX', KEYS[1], 'halted', ARGV[1])
`)

// HaltGroup halts group with reason unless it is halted already, and
// reports whether this call halted it.
func (s *Store) HaltGroup(ctx context.Context, group, reason string) (bool, error) {
	n, err := haltGroupScript.Run(ctx, s.rdb, []string{s.groupKey(group)}, reason).Int()
	if err != nil {
		return false, fmt.Errorf("halt group %s: %w", group, err)
	}
	return n == 1, nil
}

// resumeGroupScript clears a group's halt, counting the lift (lifts), with
// a new rotation-wide budget if ARGV[1] >= 0, refusing while the budget is
// still exceeded. KEYS: group.
var resumeGroupScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('not found') end
if tonumber(ARGV[1]) >= 0 then redis.call('HSET', KEYS[1], 'max_errors', ARGV[1]) end
` + groupFailedLua + `
local maxe = tonumber(redis.call('HGET', KEYS[1], 'max_errors') or '-1')
if maxe >= 0 and sum > maxe then
  return redis.error_reply('rotation-wide error budget still exceeded: ' .. sum .. ' failed > max ' .. maxe ..
    '; raise it with --max-errors-total')
end
if redis.call('HDEL', KEYS[1], 'halted') == 1 then redis.call('HINCRBY', KEYS[1], 'lifts', 1) end
return sum
`)

// ResumeGroup clears the halt of group, with a new rotation-wide budget
// (a percentage is of the servers its parts submit) unless maxErrors is
// nil; it is refused while the failures across the parts are still beyond
// the budget. It resumes no part (Resume each), and then starts the
// waiting parts whose turn it is.
func ResumeGroup(ctx context.Context, store *Store, enq Enqueuer, group string, maxErrors *Size, opts TaskOptions) error {
	g, err := store.Group(ctx, group)
	if err != nil {
		return err
	}
	var submitted int64
	for _, id := range g.Parts {
		r, err := store.Rotation(ctx, id)
		if err != nil {
			return err
		}
		// The parts' own counters decide, not what they last reported.
		if _, err := store.GroupFailed(ctx, group, id, r.Counts.Failed); err != nil {
			return err
		}
		submitted += r.Counts.Total - r.Counts.Skipped
	}
	limit := -1
	if maxErrors != nil {
		limit = maxErrors.Floor(int(submitted))
	}
	err = resumeGroupScript.Run(ctx, store.rdb, []string{store.groupKey(group)}, limit).Err()
	if err != nil && err.Error() == "not found" {
		return fmt.Errorf("rotation %s: %w", group, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("resume rotation %s: %w", group, err)
	}
	return StartWaiting(ctx, store, enq, group, opts)
}

// watchGroup keeps what spans a group's parts after part rot recorded
// outcomes or halted: it reports the part's failures to the group (which
// halts it past its rotation-wide budget), halts the group when rot has
// halted and the group's policy is HaltAll, and halts every part of a
// halted group that still runs. A part halted alone (HaltAlone) frees its
// place for a waiting one. It runs after every outcome recorded, by
// whichever task recorded it; every step is idempotent, so tasks racing
// on two parts, or a task run again after a crash, agree. It returns the
// group's halt reason when this call halted the group.
func watchGroup(ctx context.Context, store *Store, enq Enqueuer, rot *Rotation, opts TaskOptions) (string, error) {
	if rot.Group == "" {
		return "", nil
	}
	g, err := store.Group(ctx, rot.Group)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	halted, now := g.Halted, ""
	if g.MaxErrors >= 0 && rot.Counts.Failed > 0 {
		tripped, err := store.GroupFailed(ctx, g.ID, rot.ID, rot.Counts.Failed)
		if err != nil {
			return "", err
		}
		if tripped {
			if g, err = store.Group(ctx, g.ID); err != nil {
				return "", err
			}
			halted, now = g.Halted, g.Halted
		}
	}
	// A part halted by its budget may have ended at once (nothing was left
	// to submit): it halts the others all the same.
	if halted == "" && rot.State == StateFailed && !HaltedByGroup(rot) && g.OnHalt == HaltAll {
		reason := fmt.Sprintf("part %s (%s) halted (%s); --on-region-halt=halt stops every part: resume the rotation, or cancel",
			rot.ID, rot.Place(), rot.Reason)
		ok, err := store.HaltGroup(ctx, g.ID, reason)
		if err != nil {
			return "", err
		}
		if g, err = store.Group(ctx, g.ID); err != nil {
			return "", err
		}
		halted = g.Halted
		if ok {
			now = halted
		}
	}
	if halted == "" {
		if rot.Halted() {
			// Halted alone: it frees its place for the next.
			return "", StartWaiting(ctx, store, enq, g.ID, opts)
		}
		return "", nil
	}
	for _, id := range g.Parts {
		p, err := store.Rotation(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // not created yet: a start is writing the parts
		}
		if err != nil {
			return now, err
		}
		// A waiting part stays waiting: a halted group starts none.
		if p.Finished() || p.Waiting() || p.Halted() || p.State == StateCancelled {
			continue
		}
		// The group read above may be older than a resume of the whole,
		// which lifts the group's halt, then resumes the parts: read it
		// again right before each halt, and halt the part only if it was
		// not resumed after a later lift, so a part just resumed is not
		// halted for a halt already lifted.
		cur, err := store.Group(ctx, g.ID)
		if err != nil || cur.Halted == "" {
			return now, err
		}
		if _, err := store.HaltForGroup(ctx, id, groupHaltPrefix+cur.Halted, cur.Lifts); err != nil {
			return now, err
		}
	}
	return now, nil
}

// groupHaltPrefix starts the reason of a part halted by its group
// (finishLua knows it too).
const (
	groupHaltPrefix    = "halted with its rotation: "
	groupHaltPrefixLen = "26"
)

// HaltedByGroup reports whether part r was halted because its group was,
// not by its own budget or credentials: resuming the group resumes it.
func HaltedByGroup(r *Rotation) bool {
	return r.State == StateFailed && strings.HasPrefix(r.Reason, groupHaltPrefix)
}

// ResumeRefused says why Resume would refuse rot with the error budget
// maxErrors (nil: its own): its failures are still beyond it. Nil when
// it would not.
func ResumeRefused(rot *Rotation, maxErrors *Size) error {
	limit := rot.MaxErrors
	if maxErrors != nil {
		limit = maxErrors.Floor(int(rot.Counts.Total - rot.Counts.Skipped))
	}
	if !rot.Halted() || limit < 0 || rot.Counts.Failed <= int64(limit) {
		return nil
	}
	return fmt.Errorf("resume rotation %s (%s): error budget still exceeded: %d failed > max %d; raise it with --max-errors",
		rot.ID, rot.Place(), rot.Counts.Failed, limit)
}

// StartWaiting starts the waiting parts of group, in order, while fewer
// than its MaxConcurrent parts run: a part that has finished, or is
// halted alone by its error budget (HaltAlone), frees its place. Every
// finish of a part runs it (a re-run too), and two finishers at once start
// the same parts, so nothing is left waiting for an operator. A part an
// operator paused keeps the others waiting, and a halted group starts
// none.
func StartWaiting(ctx context.Context, store *Store, enq Enqueuer, group string, opts TaskOptions) error {
	g, err := store.Group(ctx, group)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil || g.MaxConcurrent <= 0 || g.Halted != "" {
		return err
	}
	active := 0
	var waiting []string
	for _, id := range g.Parts {
		r, err := store.Rotation(ctx, id)
		if errors.Is(err, ErrNotFound) {
			// Not created yet: the start writing the parts starts it or
			// writes it waiting.
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case r.Finished():
		case r.Halted():
			if g.OnHalt == HaltAll {
				return nil // the group is being halted with it
			}
		case r.Waiting():
			waiting = append(waiting, id)
		case r.State == StatePaused:
			return nil
		default:
			active++
		}
	}
	for _, id := range waiting {
		if active >= g.MaxConcurrent {
			break
		}
		if _, _, err := Resume(ctx, store, enq, id, nil, SystemActor, opts); err != nil {
			return fmt.Errorf("start part %s of %s: %w", id, group, err)
		}
		active++
	}
	return nil
}

// GroupSummary sums finished parts into the group's completion event:
// failed if the group was halted, its rotation-wide budget exceeded or a
// part failed; else completed with errors if a part did, cancelled if one
// was, succeeded otherwise. It also names each part.
func GroupSummary(g *Group, parts []*Rotation) Summary {
	s := Summary{Version: EventVersion, Rotation: g.ID, CreatedAt: g.CreatedAt, Reason: g.Halted}
	states := map[State]int{}
	for _, p := range parts {
		s.Keypair = p.Keypair
		c := &s.Counts
		c.Total, c.Pending, c.Running = c.Total+p.Counts.Total, c.Pending+p.Counts.Pending, c.Running+p.Counts.Running
		c.Succeeded, c.Failed, c.Skipped = c.Succeeded+p.Counts.Succeeded, c.Failed+p.Counts.Failed, c.Skipped+p.Counts.Skipped
		c.Cancelled, c.Verifying = c.Cancelled+p.Counts.Cancelled, c.Verifying+p.Counts.Verifying
		c.Submitted, c.Retried, c.Resubmitted = c.Submitted+p.Counts.Submitted, c.Retried+p.Counts.Retried, c.Resubmitted+p.Counts.Resubmitted
		if p.FinishedAt.After(s.FinishedAt) {
			s.FinishedAt = p.FinishedAt
		}
		states[p.State]++
		if p.State == StateFailed && s.Reason == "" {
			s.Reason = fmt.Sprintf("part %s (%s): %s", p.ID, p.Place(), p.Reason)
		}
		s.Parts = append(s.Parts, PartSummary{Rotation: p.ID, Region: p.Region, ProjectID: p.ProjectID, State: p.State, Counts: p.Counts})
	}
	overBudget := g.MaxErrors >= 0 && s.Counts.Failed > int64(g.MaxErrors)
	if overBudget && s.Reason == "" {
		s.Reason = fmt.Sprintf("rotation-wide error budget exceeded: %d failed > max %d across its parts", s.Counts.Failed, g.MaxErrors)
	}
	s.State = GroupEnd(states, overBudget)
	return s
}

// GroupEnd is how a group whose parts have all finished ended, from its
// parts' final states counted: failed if one failed or the rotation-wide
// budget was exceeded, else completed with errors if one did, cancelled if
// one was, succeeded otherwise.
func GroupEnd(states map[State]int, overBudget bool) State {
	switch {
	case states[StateFailed] > 0 || overBudget:
		return StateFailed
	case states[StateCompletedWithErrors] > 0:
		return StateCompletedWithErrors
	case states[StateCancelled] > 0:
		return StateCancelled
	default:
		return StateSucceeded
	}
}

// finishGroup sends group's completion event once its last part has
// finished. Each part's finish runs it; the event's task id is kept for
// the retention, so parts finishing at once, or a finish run again, send
// it once.
func finishGroup(ctx context.Context, store *Store, enq Enqueuer, group string, opts TaskOptions) error {
	g, err := store.Group(ctx, group)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	parts := make([]*Rotation, 0, len(g.Parts))
	ret := opts.withDefaults().Retention
	for _, id := range g.Parts {
		p, err := store.Rotation(ctx, id)
		if errors.Is(err, ErrNotFound) {
			return nil // not created yet: it sends the event when it ends
		}
		if err != nil {
			return err
		}
		if !p.Finished() {
			return nil
		}
		if p.Retention > 0 {
			ret = p.Retention
		}
		parts = append(parts, p)
	}
	_, err = enqueue(ctx, enq, TypeFinished, GroupSummary(g, parts), GroupFinishedTaskID(g.ID),
		asynq.Queue(store.ns.Queue(QueueEvents)), asynq.Retention(ret))
	return err
}
