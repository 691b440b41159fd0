package tasks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/movinglist"
)

// DefaultPrefix is the prefix of every key the Store writes in the
// default namespace (Namespace.KeyPrefix).
const DefaultPrefix = "cph-rekey:"

// ErrNotFound is returned for a rotation that does not exist.
var ErrNotFound = errors.New("rotation not found")

// ErrConflict is returned when a rotation id is reused for different work.
var ErrConflict = errors.New("rotation exists with different targets or options")

// Store keeps rotations in Redis. It owns every key and script; nothing
// else in cph-rekey reads or writes rotation state.
//
// Every key starts with its namespace's prefix (Namespace.KeyPrefix), and
// every key of a rotation carries the rotation id as a hash tag, so a Redis
// Cluster keeps a rotation (and its scripts' keys) on one slot:
//
//	<prefix>rotations      ZSET  rotation ids by creation time
//	<prefix>{<id>}:meta    HASH  the rotation record and its counters; wave_end:<n>,
//	                             wave_size:<n> per wave; the tick chain (tgen, tseq, tick_at);
//	                             job_lat, the jobs' latency learned so far (ms); the
//	                             chunks enqueued (queued, up to which chunk) and whose
//	                             first submit ended (sent); the first chunk not submitted
//	                             the watchdog saw (unsent_from); cancel_closed once a
//	                             cancel has closed every batch not submitted; once
//	                             the rotation has finished, its retire (retire: the
//	                             outcome as JSON; retire_due, retire_err: a scheduled one)
//	<prefix>{<id>}:rec     HASH  server id → terminal outcome record
//	<prefix>{<id>}:b:<n>   HASH  batch n: its servers, the checkpoint (request id,
//	                             job ids), which jobs ended and which servers are resolved
//	                             (b:0 lists the servers skipped at planning time)
//	<prefix>{<id>}:polls   ZSET  batches whose jobs run → when their next poll is due
//	<prefix>{<id>}:retry   ZSET  the retry pool: servers for another attempt → end of backoff
//	<prefix>{<id>}:fresh   SET   retry batches formed and not submitted yet
//	<prefix>{<id>}:verify  ZSET  servers waiting for verification → place in the server list
//	<prefix>{<id>}:pages   HASH  list page → targets on it not yet verified or terminal
//	<prefix>{<id>}:group   HASH  a rotation across places: fingerprint, created_at, parts (its rotations)
//	<prefix>{<id>}:plan    STRING the plan's digest and size, frozen before its chunks are written
//	<prefix>{<id>}:hist    LIST  the rotation's history, capped (store_history.go)
type Store struct {
	rdb    redis.UniversalClient
	ns     Namespace
	prefix string
}

// NewStore returns a Store of the rotations in namespace ns ("": the
// default), which must be valid (Namespace.Validate).
func NewStore(rdb redis.UniversalClient, ns Namespace) *Store {
	return &Store{rdb: rdb, ns: ns, prefix: ns.KeyPrefix()}
}

// Namespace is the namespace of the Store's rotations; their tasks go to
// its queues (Namespace.Queue).
func (s *Store) Namespace() Namespace { return s.ns }

func (s *Store) rotationsKey() string        { return s.prefix + "rotations" }
func (s *Store) metaKey(id string) string    { return s.prefix + "{" + id + "}:meta" }
func (s *Store) recordsKey(id string) string { return s.prefix + "{" + id + "}:rec" }
func (s *Store) batchKey(id string, n int) string {
	return s.prefix + "{" + id + "}:b:" + strconv.Itoa(n)
}
func (s *Store) pollsKey(id string) string  { return s.prefix + "{" + id + "}:polls" }
func (s *Store) retryKey(id string) string  { return s.prefix + "{" + id + "}:retry" }
func (s *Store) verifyKey(id string) string { return s.prefix + "{" + id + "}:verify" }
func (s *Store) pagesKey(id string) string  { return s.prefix + "{" + id + "}:pages" }
func (s *Store) freshKey(id string) string  { return s.prefix + "{" + id + "}:fresh" }
func (s *Store) statsKey(id string) string  { return s.prefix + "{" + id + "}:stats" }
func (s *Store) groupKey(id string) string  { return s.prefix + "{" + id + "}:group" }

// createScript creates a rotation record unless one exists, and begins
// its history: created, and the keypair's import when there was one. It
// returns 0 when created, 1 when the same rotation (same fingerprint)
// already exists and -1 when the id is taken by different work. KEYS:
// meta, history. ARGV: id, fingerprint, now (ms), actor, what was created,
// where the keypair was imported ("": it was not), then the record's
// fields and values.
var createScript = redis.NewScript(`
local meta, hist, hist_at = KEYS[1], KEYS[2], ARGV[3]
` + historyLua + `
local fp = redis.call('HGET', meta, 'fingerprint')
if fp then
  if fp == ARGV[2] then return 1 end
  return -1
end
redis.call('HSET', meta, unpack(ARGV, 7))
history('created', ARGV[4], ARGV[5])
if ARGV[6] ~= '' then history('keypair_imported', ARGV[4], ARGV[6]) end
return 0
`)

// Create writes a new rotation: the chunk lists first, then the record, so
// a worker never sees a record without its chunks. chunks[0] holds the
// servers skipped at planning time (recorded as skipped); chunks are
// batches 1 to len(chunks), submitted as first attempts. With positions
// known (r.Positions), the number of targets on each page of the project's
// server list is kept for verification. Re-creating the same rotation (same
// id and fingerprint) is a no-op that returns created=false; the same id
// with a different fingerprint returns ErrConflict. The plan is frozen
// before its first chunk is written: a start cut short and run again
// completes it if it planned the same, and returns a *PlanChangedError
// (an ErrConflict) if the fleet it read has changed the plan.
func (s *Store) Create(ctx context.Context, r *Rotation, chunks [][]Entry, skipped []Entry, now time.Time) (created bool, err error) {
	id := r.ID
	// An existing rotation is never written to: a re-run's plan (servers
	// now skipped because this rotation changed them, or another target
	// list under the same id) must not leak into its chunks or records. The
	// writes below are all set-if-absent, so a start that died before the
	// record was created is completed by running it again.
	fp, err := s.rdb.HGet(ctx, s.metaKey(id), "fingerprint").Result()
	switch {
	case err == nil && fp == r.Fingerprint:
		return false, s.index(ctx, id, now)
	case err == nil:
		return false, fmt.Errorf("rotation %s: %w", id, ErrConflict)
	case !errors.Is(err, redis.Nil):
		return false, fmt.Errorf("create rotation %s: %w", id, err)
	}
	// Before the record exists, a re-run may have read a fleet that has
	// changed: its plan is written only if it is the one frozen first.
	if err := s.freezePlan(ctx, r, chunks, skipped); err != nil {
		return false, err
	}
	pipe := s.rdb.Pipeline()
	flush := func() error {
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("create rotation %s: write chunks: %w", id, err)
		}
		return nil
	}
	pages := map[string]int{}
	unplacedTargets := 0
	for i, c := range chunks {
		pipe.HSetNX(ctx, s.batchKey(id, i+1), "servers", encodeEntries(c))
		w := r.WaveOf(i + 1)
		for _, e := range c {
			if p := e.page(); p >= 0 {
				pages[pageField(w, p)]++
			} else if r.Verify {
				// Verification may learn its place from a page it reads.
				pipe.HSetNX(ctx, s.whereKey(id), e.ServerID, -1)
				unplacedTargets++
			}
		}
		if pipe.Len() >= 500 {
			if err := flush(); err != nil {
				return false, err
			}
		}
	}
	// Set, not incremented: a start run again after dying here writes the
	// same counts.
	for f, n := range pages {
		pipe.HSet(ctx, s.pagesKey(id), f, n)
		if pipe.Len() >= 500 {
			if err := flush(); err != nil {
				return false, err
			}
		}
	}
	rec := encodeRecord(record{Outcome: OutcomeSkipped, Attempts: 0, FinishedAt: now})
	for _, e := range skipped {
		pipe.HSetNX(ctx, s.recordsKey(id), e.ServerID, rec)
		if pipe.Len() >= 500 {
			if err := flush(); err != nil {
				return false, err
			}
		}
	}
	if len(skipped) > 0 {
		pipe.HSetNX(ctx, s.batchKey(id, 0), "servers", encodeEntries(skipped))
	}
	if err := flush(); err != nil {
		return false, err
	}
	var pending int64
	for _, c := range chunks {
		pending += int64(len(c))
	}
	maxErrors := r.MaxErrors
	if maxErrors < 0 {
		maxErrors = -1
	}
	fields := []any{
		"id", id, "schema", SchemaVersion, "keypair", r.Keypair, "chunk_size", r.ChunkSize, "chunks", len(chunks), "batches", len(chunks),
		"max_attempts", r.MaxAttempts, "fingerprint", r.Fingerprint, "state", string(StateRunning),
		"created_at", now.UnixMilli(), "total", pending + int64(len(skipped)), "pending", pending,
		"running", 0, "succeeded", 0, "failed", 0, "skipped", len(skipped), "cancelled", 0,
		"submitted", 0, "retried", 0, "resubmitted", 0, "verifying", 0, "wave_queued", 0, "queued", 0, "sent", 0,
		"max_errors", maxErrors, "verify", flag(r.Verify), "positions", flag(r.Positions), "pause_after_wave", flag(r.PauseAfterWave),
		"retention_ms", r.Retention.Milliseconds(), "waves", len(r.Waves), "wave", min(1, len(r.Waves)),
		"list_count", r.listCount, "vdrift", driftText(movinglist.NewDrift(r.listCount)), "unplaced", unplacedTargets,
	}
	if !r.Place().IsZero() || r.Group != "" {
		fields = append(fields, "region", r.Region, "project_id", r.ProjectID, "group", r.Group)
	}
	for i, w := range r.Waves {
		fields = append(fields, "wave_end:"+strconv.Itoa(i+1), w.LastChunk, "wave_size:"+strconv.Itoa(i+1), w.Servers)
	}
	if len(r.Waves) > 0 {
		// wave_open counts the current wave's servers not yet terminal.
		fields = append(fields, "wave_open", r.Waves[0].Servers)
	}
	args := append([]any{id, r.Fingerprint, now.UnixMilli(), r.actor, r.createdDetail(pending, len(skipped)), r.imported}, fields...)
	res, err := createScript.Run(ctx, s.rdb, []string{s.metaKey(id), s.historyKey(id)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("create rotation %s: %w", id, err)
	}
	switch res {
	case -1:
		return false, fmt.Errorf("rotation %s: %w", id, ErrConflict)
	case 1:
		return false, nil
	}
	if err := s.index(ctx, id, now); err != nil {
		return true, err
	}
	if pending == 0 {
		if _, err := s.finishIfDone(ctx, id, now); err != nil {
			return true, err
		}
	}
	return true, nil
}

// index adds a rotation to the index of rotations. The index is in
// another slot of a Redis Cluster than the rotation, so it is written apart
// from the create script; a start that died before it is completed by its
// re-run.
func (s *Store) index(ctx context.Context, id string, created time.Time) error {
	err := s.rdb.ZAddNX(ctx, s.rotationsKey(), redis.Z{Score: float64(created.UnixMilli()), Member: id}).Err()
	if err != nil {
		return fmt.Errorf("index rotation %s: %w", id, err)
	}
	return nil
}

// Rotation reads a rotation's record and counters.
func (s *Store) Rotation(ctx context.Context, id string) (*Rotation, error) {
	m, err := s.rdb.HGetAll(ctx, s.metaKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read rotation %s: %w", id, err)
	}
	if len(m) == 0 {
		return nil, fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	return rotationOf(m), nil
}

// rotationOf reads a rotation record from its meta hash.
func rotationOf(m map[string]string) *Rotation {
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	r := &Rotation{
		ID: m["id"], Keypair: m["keypair"], Region: m["region"], ProjectID: m["project_id"], Group: m["group"], ChunkSize: int(n("chunk_size")), Chunks: int(n("chunks")), Batches: int(n("batches")),
		MaxAttempts: int(n("max_attempts")), Fingerprint: m["fingerprint"], State: State(m["state"]),
		CreatedAt: time.UnixMilli(n("created_at")).UTC(),
		Counts: Counts{
			Total: n("total"), Pending: n("pending"), Running: n("running"), Succeeded: n("succeeded"),
			Failed: n("failed"), Skipped: n("skipped"), Cancelled: n("cancelled"), Submitted: n("submitted"),
			Retried: n("retried"), Resubmitted: n("resubmitted"), Verifying: n("verifying"),
		},
	}
	if f := n("finished_at"); f > 0 {
		r.FinishedAt = time.UnixMilli(f).UTC()
	}
	r.Wave, r.MaxErrors, r.Reason = int(n("wave")), int(n("max_errors")), m["reason"]
	r.Schema = max(int(n("schema")), 1)
	r.Verify, r.PauseAfterWave, r.Positions = m["verify"] == "1", m["pause_after_wave"] == "1", m["positions"] == "1"
	r.waveQueued, r.queued, r.sent = int(n("wave_queued")), int(n("queued")), int(n("sent"))
	r.listCount = int(n("list_count"))
	r.drift = movinglist.NewDrift(r.listCount)
	if err := r.drift.UnmarshalText([]byte(m["vdrift"])); err != nil {
		// Written by a release before the drift was kept: learned again.
		r.drift = movinglist.NewDrift(r.listCount)
	}
	r.unplaced, r.sweepNext, r.sweepDone = int(n("unplaced")), int(n("sweep")), m["sweep_done"] == "1"
	r.showRefused = m["show_refused"] == "1"
	r.cancelClosed = m["cancel_closed"] == "1"
	r.Retired, r.RetireError = retiredOf(m), m["retire_err"]
	if due := n("retire_due"); due > 0 {
		r.RetireDue = time.UnixMilli(due).UTC()
	}
	r.WaveOpen = int(n("wave_open"))
	r.Retention = time.Duration(n("retention_ms")) * time.Millisecond
	r.jobLatency = time.Duration(n("job_lat")) * time.Millisecond
	if _, ok := m["max_errors"]; !ok {
		r.MaxErrors = -1
	}
	for w := 1; w <= int(n("waves")); w++ {
		i := strconv.Itoa(w)
		r.Waves = append(r.Waves, Wave{LastChunk: int(n("wave_end:" + i)), Servers: int(n("wave_size:" + i))})
	}
	return r
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Rotations lists rotations, newest first, at most limit of them.
func (s *Store) Rotations(ctx context.Context, limit int) ([]*Rotation, error) {
	rots, _, err := s.RotationsPage(ctx, 0, limit)
	return rots, err
}

// setStateScript moves a rotation that has not finished between running,
// paused and cancelled, and adds the change to its history. Cancelled is
// final; cancelling a cancelled rotation, finished or not, changes nothing
// and is no error, so a cancel cut short can be run again to finish what
// it started. KEYS: meta, history. ARGV: state, reason, now (ms), actor,
// a note for the history ("": none).
var setStateScript = redis.NewScript(`
local meta, hist, hist_at = KEYS[1], KEYS[2], ARGV[3]
` + historyLua + `
local cur = redis.call('HGET', meta, 'state')
if not cur then return redis.error_reply('not found') end
if cur == 'cancelled' and ARGV[1] == 'cancelled' then return cur end
if redis.call('HEXISTS', meta, 'finished_at') == 1 then return redis.error_reply('rotation has finished (' .. cur .. ')') end
if cur == 'cancelled' then return redis.error_reply('rotation is cancelled') end
redis.call('HSET', meta, 'state', ARGV[1])
if ARGV[2] == '' then redis.call('HDEL', meta, 'reason') else redis.call('HSET', meta, 'reason', ARGV[2]) end
if cur ~= ARGV[1] then
  local kind = ARGV[1]
  if kind == 'running' then kind = 'resumed' end
  local detail = 'was ' .. cur
  if ARGV[5] ~= '' then detail = detail .. '; ' .. ARGV[5] end
  history(kind, ARGV[4], detail)
end
return cur
`)

// Reasons of the controls, which the history's actor already says.
const (
	reasonPaused    = "paused by an operator"
	reasonCancelled = "cancelled by an operator"
)

// SetState pauses, resumes (StateRunning) or cancels a rotation, with the
// reason shown next to the state, and records actor (ValidateActor)
// making the change in its history. Workers check the state right before
// every UpdateKeypair call, so the change takes effect across the fleet at
// once for calls not yet started. Resume and Cancel do more than this.
func (s *Store) SetState(ctx context.Context, id string, st State, reason, actor string) error {
	switch st {
	case StateRunning, StatePaused, StateCancelled:
	default:
		return fmt.Errorf("set rotation %s state: %q is not running, paused or cancelled", id, st)
	}
	if err := ValidateActor(actor); err != nil {
		return fmt.Errorf("set rotation %s state: %w", id, err)
	}
	note := reason
	if reason == reasonPaused || reason == reasonCancelled {
		note = ""
	}
	err := setStateScript.Run(ctx, s.rdb, []string{s.metaKey(id), s.historyKey(id)}, string(st), reason,
		time.Now().UnixMilli(), actor, note).Err()
	if err != nil && err.Error() == "not found" {
		return fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("set rotation %s state to %s: %w", id, st, err)
	}
	return nil
}

// resumeScript sets a paused or halted rotation running again, with a new
// error budget if ARGV[2] >= 0, refusing while the budget is still
// exceeded, and starts the next wave if the current one has finished. It
// adds the resume (and a changed budget) to the history, and returns the
// current wave. A part of a group records how often the group's halt had
// been lifted when it was resumed (glifts; see haltScript). KEYS: meta,
// history. ARGV: now (ms), max errors or -1, actor, the group's lifts (-1:
// not a part).
var resumeScript = redis.NewScript(`
local meta, hist, hist_at = KEYS[1], KEYS[2], ARGV[1]
` + historyLua + advanceLua + `
local st = redis.call('HGET', meta, 'state')
if not st then return redis.error_reply('not found') end
if redis.call('HEXISTS', meta, 'finished_at') == 1 then return redis.error_reply('rotation has finished (' .. st .. ')') end
if st == 'cancelled' then return redis.error_reply('rotation is cancelled') end
local old = redis.call('HGET', meta, 'max_errors') or '-1'
if tonumber(ARGV[2]) >= 0 then redis.call('HSET', meta, 'max_errors', ARGV[2]) end
local failed = tonumber(redis.call('HGET', meta, 'failed'))
local maxe = tonumber(redis.call('HGET', meta, 'max_errors') or '-1')
if maxe >= 0 and failed > maxe then
  return redis.error_reply('error budget still exceeded: ' .. failed .. ' failed > max ' .. maxe .. '; raise it with --max-errors')
end
local budget = tonumber(ARGV[2]) >= 0 and tonumber(old) ~= maxe
if st ~= 'running' or budget then
  local detail = 'was ' .. st
  if budget then detail = detail .. '; max errors ' .. old .. ' -> ' .. maxe .. ' (' .. failed .. ' failed)' end
  history('resumed', ARGV[3], detail)
end
redis.call('HSET', meta, 'state', 'running')
redis.call('HDEL', meta, 'reason')
if tonumber(ARGV[4]) >= 0 then redis.call('HSET', meta, 'glifts', ARGV[4]) end
advance()
return tonumber(redis.call('HGET', meta, 'wave') or '0')
`)

// Resume sets a paused or halted rotation running, with a new error budget
// of maxErrors servers unless maxErrors < 0, and returns the wave to
// submit (it may have just started). The history records actor
// (ValidateActor) resuming it. groupLifts is the Group.Lifts of the
// rotation's group when it is a part (-1: not a part): a halt of the
// group read before a later lift is not applied to it (HaltForGroup).
func (s *Store) Resume(ctx context.Context, id string, maxErrors int, actor string, groupLifts int64) (wave int, err error) {
	if err := ValidateActor(actor); err != nil {
		return 0, fmt.Errorf("resume rotation %s: %w", id, err)
	}
	wave, err = resumeScript.Run(ctx, s.rdb, []string{s.metaKey(id), s.historyKey(id)}, time.Now().UnixMilli(), maxErrors, actor, groupLifts).Int()
	if err != nil && err.Error() == "not found" {
		return 0, fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("resume rotation %s: %w", id, err)
	}
	return wave, nil
}

// closeScript records every server of batches that were never submitted
// (no checkpoint, no submit call started) as cancelled, and with ARGV[4]
// set every server of the retry pool too, and finishes the rotation if
// nothing is left. KEYS: meta, records, pages, fresh, retry, history,
// then the batch keys. ARGV: now (ms), now (s), message, drain pool (1/0),
// the current wave, then pairs of batch number and wave.
var closeScript = redis.NewScript(`
local meta, hist, hist_at = KEYS[1], KEYS[6], ARGV[1]
` + historyLua + `
local closed = 0
local function close(entries, wave)
  local n = 0
  for line in string.gmatch(entries, '[^\n]*\n') do
    local sid, attempt, pos = string.match(line, '^([^\t]+)\t[^\t]*\t[^\t]*\t([^\t]*)\t([^\t]*)\n$')
    if sid then
      local rec = 'cancelled\t' .. (tonumber(attempt) - 1) .. '\t\t\t\t' .. ARGV[3] .. '\t' .. ARGV[2]
      if redis.call('HSETNX', KEYS[2], sid, rec) == 1 then
        n = n + 1
        if tonumber(pos) >= 0 then
          local f = wave .. ':' .. math.floor(tonumber(pos) / 100)
          if tonumber(attempt) > 1 then f = 'r:' .. f end
          redis.call('HINCRBY', KEYS[3], f, -1)
        end
      end
    end
  end
  redis.call('HINCRBY', meta, 'pending', -n)
  redis.call('HINCRBY', meta, 'cancelled', n)
  redis.call('HINCRBY', meta, 'wave_open', -n)
  closed = closed + n
end
for a = 7, #KEYS do
  local k = KEYS[a]
  local servers = redis.call('HGET', k, 'servers')
  if servers and redis.call('HEXISTS', k, 'cp') == 0 and tonumber(redis.call('HGET', k, 'intents') or '0') <= 0 then
    close(servers, ARGV[2 * a - 7])
    redis.call('HSET', k, 'cp', '1', 'req', '', 'at', ARGV[1], 'open', 0, 'done', '1')
    redis.call('SREM', KEYS[4], ARGV[2 * a - 8])
  end
end
if ARGV[4] == '1' then
  local pool = redis.call('ZRANGE', KEYS[5], 0, -1)
  if #pool > 0 then
    close(table.concat(pool), ARGV[5])
    redis.call('DEL', KEYS[5])
  end
end
` + finishLua + `
return {closed, finished}
`)

// Cancel cancels a rotation and records every server not submitted yet as
// cancelled at once, the retry pool included, instead of leaving that to
// each batch's submit task. Batches being submitted or already submitted
// are left to their tasks: their jobs' outcomes are recorded (and
// verified), and their failed servers are not retried. It reports how many
// servers it closed and whether that finished the rotation.
//
// Every chunk is closed, those of waves never enqueued too: no task would
// ever move them. The closing takes one script per 100 batches, so a
// cancel can be cut short between them (Ctrl-C, a dropped connection, a
// failover); it is idempotent, and cancelling the rotation again closes
// what the first call left.
func (s *Store) Cancel(ctx context.Context, id, actor string, now time.Time) (closed int, finished bool, err error) {
	if err := s.SetState(ctx, id, StateCancelled, reasonCancelled, actor); err != nil {
		return 0, false, err
	}
	rot, err := s.Rotation(ctx, id)
	if err != nil || rot.Finished() {
		return 0, false, err
	}
	msg := "rotation cancelled before this server was submitted"
	const per = 100 // batches a script call
	// Retry batches are formed only from the pool, drained by the first
	// call, so reading Batches once is enough.
	for first := 1; first <= max(rot.Batches, 1); first += per {
		keys := []string{s.metaKey(id), s.recordsKey(id), s.pagesKey(id), s.freshKey(id), s.retryKey(id), s.historyKey(id)}
		args := []any{now.UnixMilli(), now.Unix(), msg, flag(first == 1), rot.Wave}
		for n := first; n < first+per && n <= rot.Batches; n++ {
			keys = append(keys, s.batchKey(id, n))
			args = append(args, n, rot.waveOfBatch(n))
		}
		v, err := closeScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
		if err != nil {
			return closed, finished, fmt.Errorf("cancel %s: close batches from %d: %w", id, first, err)
		}
		closed += int(v[0])
		finished = finished || v[1] == 1
	}
	// What is left is the tasks' to close: the watchdog need not look.
	if err := s.rdb.HSet(ctx, s.metaKey(id), "cancel_closed", 1).Err(); err != nil {
		return closed, finished, fmt.Errorf("cancel %s: %w", id, err)
	}
	return closed, finished, nil
}

// Queued records that wave w's chunks up to chunk c are enqueued: wave w
// has started (its history says so the first time), and the next chunk
// to enqueue comes after c.
func (s *Store) Queued(ctx context.Context, id string, w, c int) error {
	err := queuedScript.Run(ctx, s.rdb, []string{s.metaKey(id), s.historyKey(id)}, w, c, time.Now().UnixMilli()).Err()
	if err != nil {
		return fmt.Errorf("rotation %s: mark wave %d enqueued up to chunk %d: %w", id, w, c, err)
	}
	return nil
}

// queuedScript moves the wave and chunk marks forward, never back: two
// processes topping up the same wave at once write in any order, and the
// one that moves the wave mark records the wave's start. KEYS: meta,
// history. ARGV: wave, chunk, now (ms).
var queuedScript = redis.NewScript(`
local meta, hist, hist_at = KEYS[1], KEYS[2], ARGV[3]
` + historyLua + `
if tonumber(ARGV[1]) > tonumber(redis.call('HGET', meta, 'wave_queued') or '0') then
  local m = redis.call('HMGET', meta, 'wave_size:' .. ARGV[1], 'waves', 'failed', 'max_errors')
  local detail = 'wave ' .. ARGV[1] .. ' of ' .. (m[2] or '?') .. ': ' .. (m[1] or '?') .. ' servers'
  if tonumber(m[3] or '0') > 0 then detail = detail .. '; ' .. m[3] .. ' failed so far (max ' .. (m[4] or '-1') .. ')' end
  history('wave_started', '` + SystemActor + `', detail)
end
for i, f in ipairs({'wave_queued', 'queued'}) do
  if tonumber(ARGV[i]) > tonumber(redis.call('HGET', meta, f) or '0') then redis.call('HSET', meta, f, ARGV[i]) end
end
return 0
`)

// finishIfDone finishes a rotation with nothing left to do (every server
// skipped at planning time).
func (s *Store) finishIfDone(ctx context.Context, id string, now time.Time) (bool, error) {
	n, err := finishScript.Run(ctx, s.rdb, []string{s.metaKey(id), s.historyKey(id)}, now.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("finish rotation %s: %w", id, err)
	}
	return n == 1, nil
}

// Expire sets the retention of a finished rotation: all its keys expire
// after the rotation's own Retention, or d when it has none, and its entry
// in the rotation index is dropped when listed after that.
func (s *Store) Expire(ctx context.Context, r *Rotation, d time.Duration) error {
	if r.Retention > 0 {
		d = r.Retention
	}
	// The record's TTL is set last: once it has one, every key has.
	ttl, err := s.rdb.TTL(ctx, s.metaKey(r.ID)).Result()
	if err != nil {
		return fmt.Errorf("set retention of %s: %w", r.ID, err)
	}
	if ttl > 0 {
		return nil
	}
	pipe := s.rdb.Pipeline()
	for _, k := range []string{s.recordsKey(r.ID), s.pollsKey(r.ID), s.retryKey(r.ID), s.verifyKey(r.ID), s.pagesKey(r.ID), s.freshKey(r.ID), s.statsKey(r.ID),
		s.whereKey(r.ID), s.vfailKey(r.ID), s.planKey(r.ID), s.historyKey(r.ID)} {
		pipe.Expire(ctx, k, d)
	}
	for n := 0; n <= r.Batches; n++ {
		pipe.Expire(ctx, s.batchKey(r.ID, n), d)
		if pipe.Len() >= 1000 {
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("set retention of %s: %w", r.ID, err)
			}
		}
	}
	if r.Group != "" {
		// Each part that ends sets it again, so the group outlives its
		// last part by the retention.
		pipe.Expire(ctx, s.groupKey(r.Group), d)
	}
	pipe.Expire(ctx, s.metaKey(r.ID), d)
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("set retention of %s: %w", r.ID, err)
	}
	return nil
}

// record is a server's terminal outcome as stored: tab-separated, because
// a million of them must stay small.
type record struct {
	Outcome    Outcome
	Attempts   int
	Batch      int // the batch of its last attempt (0: none)
	JobID      string
	Code       string
	Message    string
	FinishedAt time.Time
}

func encodeRecord(r record) string {
	msg := oneLine(r.Message)
	return strings.Join([]string{string(r.Outcome), strconv.Itoa(r.Attempts), strconv.Itoa(r.Batch), r.JobID, r.Code, msg,
		strconv.FormatInt(r.FinishedAt.Unix(), 10)}, "\t")
}

func decodeRecord(s string) (record, error) {
	f := strings.Split(s, "\t")
	if len(f) != 7 {
		return record{}, fmt.Errorf("corrupt outcome record %q", s)
	}
	n, _ := strconv.Atoi(f[1])
	b, _ := strconv.Atoi(f[2])
	ts, _ := strconv.ParseInt(f[6], 10, 64)
	return record{Outcome: Outcome(f[0]), Attempts: n, Batch: b, JobID: f[3], Code: f[4], Message: f[5], FinishedAt: time.Unix(ts, 0).UTC()}, nil
}

// oneLine makes a message safe to store in a tab-separated field.
func oneLine(msg string) string {
	return strings.NewReplacer("\t", " ", "\n", " ", "\r", " ").Replace(msg)
}
