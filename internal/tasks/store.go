package tasks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the prefix of every key the Store writes.
const DefaultPrefix = "cph-rekey:"

// ErrNotFound is returned for a rotation that does not exist.
var ErrNotFound = errors.New("rotation not found")

// ErrConflict is returned when a rotation id is reused for different work.
var ErrConflict = errors.New("rotation exists with different targets or options")

// Store keeps rotations in Redis. It owns every key and script; nothing
// else in cph-rekey reads or writes rotation state.
//
// Every key of a rotation carries the rotation id as a hash tag, so a Redis
// Cluster keeps a rotation (and its scripts' keys) on one slot:
//
//	<prefix>rotations                 ZSET  rotation ids by creation time
//	<prefix>{<id>}:meta               HASH  the rotation record and its counters;
//	                                        wave_end:<n>, wave_size:<n> per wave
//	<prefix>{<id>}:rec                HASH  server id → terminal outcome record
//	<prefix>{<id>}:c:<chunk>:<attempt> HASH  one chunk attempt: its servers, the
//	                                        checkpoint (request id, job ids) and
//	                                        which servers are resolved
type Store struct {
	rdb    redis.UniversalClient
	prefix string
}

// NewStore returns a Store writing keys under prefix (DefaultPrefix if empty).
func NewStore(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{rdb: rdb, prefix: prefix}
}

func (s *Store) rotationsKey() string        { return s.prefix + "rotations" }
func (s *Store) metaKey(id string) string    { return s.prefix + "{" + id + "}:meta" }
func (s *Store) recordsKey(id string) string { return s.prefix + "{" + id + "}:rec" }
func (s *Store) attemptKey(id string, chunk, attempt int) string {
	return s.prefix + "{" + id + "}:c:" + strconv.Itoa(chunk) + ":" + strconv.Itoa(attempt)
}

// createScript creates a rotation record unless one exists: it returns 0
// when created, 1 when the same rotation (same fingerprint) already exists
// and -1 when the id is taken by different work.
var createScript = redis.NewScript(`
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if fp then
  if fp == ARGV[2] then return 1 end
  return -1
end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
return 0
`)

// Create writes a new rotation: the chunk lists first, then the record, so
// a worker never sees a record without its chunks. chunks[0] holds the
// servers skipped at planning time (recorded as skipped with skipRecord);
// chunks[1:] are the chunks to submit. Re-creating the same rotation (same
// id and fingerprint) is a no-op that returns created=false; the same id
// with a different fingerprint returns ErrConflict.
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
	pipe := s.rdb.Pipeline()
	flush := func() error {
		if _, err := pipe.Exec(ctx); err != nil {
			return fmt.Errorf("create rotation %s: write chunks: %w", id, err)
		}
		return nil
	}
	for i, c := range chunks {
		pipe.HSetNX(ctx, s.attemptKey(id, i+1, 1), "servers", encodeEntries(c))
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
		pipe.HSetNX(ctx, s.attemptKey(id, 0, 1), "servers", encodeEntries(skipped))
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
		"id", id, "keypair", r.Keypair, "chunk_size", r.ChunkSize, "chunks", len(chunks),
		"max_attempts", r.MaxAttempts, "fingerprint", r.Fingerprint, "state", string(StateRunning),
		"created_at", now.UnixMilli(), "total", pending + int64(len(skipped)), "pending", pending,
		"running", 0, "succeeded", 0, "failed", 0, "skipped", len(skipped), "cancelled", 0,
		"submitted", 0, "retried", 0, "resubmitted", 0,
		"max_errors", maxErrors, "verify", flag(r.Verify), "pause_after_wave", flag(r.PauseAfterWave),
		"retention_ms", r.Retention.Milliseconds(), "waves", len(r.Waves), "wave", min(1, len(r.Waves)),
	}
	for i, w := range r.Waves {
		fields = append(fields, "wave_end:"+strconv.Itoa(i+1), w.LastChunk, "wave_size:"+strconv.Itoa(i+1), w.Servers)
	}
	if len(r.Waves) > 0 {
		// wave_open counts the current wave's servers not yet terminal.
		fields = append(fields, "wave_open", r.Waves[0].Servers)
	}
	args := append([]any{id, r.Fingerprint, now.UnixMilli()}, fields...)
	res, err := createScript.Run(ctx, s.rdb, []string{s.metaKey(id)}, args...).Int()
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
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	r := &Rotation{
		ID: m["id"], Keypair: m["keypair"], ChunkSize: int(n("chunk_size")), Chunks: int(n("chunks")),
		MaxAttempts: int(n("max_attempts")), Fingerprint: m["fingerprint"], State: State(m["state"]),
		CreatedAt: time.UnixMilli(n("created_at")).UTC(),
		Counts: Counts{
			Total: n("total"), Pending: n("pending"), Running: n("running"), Succeeded: n("succeeded"),
			Failed: n("failed"), Skipped: n("skipped"), Cancelled: n("cancelled"), Submitted: n("submitted"),
			Retried: n("retried"), Resubmitted: n("resubmitted"),
		},
	}
	if f := n("finished_at"); f > 0 {
		r.FinishedAt = time.UnixMilli(f).UTC()
	}
	r.Wave, r.MaxErrors, r.Reason = int(n("wave")), int(n("max_errors")), m["reason"]
	r.Verify, r.PauseAfterWave = m["verify"] == "1", m["pause_after_wave"] == "1"
	r.Retention = time.Duration(n("retention_ms")) * time.Millisecond
	if _, ok := m["max_errors"]; !ok {
		r.MaxErrors = -1
	}
	for w := 1; w <= int(n("waves")); w++ {
		i := strconv.Itoa(w)
		r.Waves = append(r.Waves, Wave{LastChunk: int(n("wave_end:" + i)), Servers: int(n("wave_size:" + i))})
	}
	return r, nil
}

func flag(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

// Rotations lists rotations, newest first, at most limit of them.
func (s *Store) Rotations(ctx context.Context, limit int) ([]*Rotation, error) {
	ids, err := s.rdb.ZRevRange(ctx, s.rotationsKey(), 0, int64(limit)-1).Result()
	if err != nil {
		return nil, fmt.Errorf("list rotations: %w", err)
	}
	var out []*Rotation
	for _, id := range ids {
		r, err := s.Rotation(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // expired after its retention
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// setStateScript moves a rotation that has not finished between running,
// paused and cancelled. Cancelled is final.
var setStateScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[1], 'state')
if not cur then return redis.error_reply('not found') end
if redis.call('HEXISTS', KEYS[1], 'finished_at') == 1 then return redis.error_reply('rotation has finished (' .. cur .. ')') end
if cur == 'cancelled' then return redis.error_reply('rotation is cancelled') end
redis.call('HSET', KEYS[1], 'state', ARGV[1])
if ARGV[2] == '' then redis.call('HDEL', KEYS[1], 'reason') else redis.call('HSET', KEYS[1], 'reason', ARGV[2]) end
return cur
`)

// SetState pauses, resumes (StateRunning) or cancels a rotation, with the
// reason shown next to the state. Workers check the state right before
// every UpdateKeypair call, so the change takes effect across the fleet at
// once for calls not yet started. Resume and Cancel do more than this.
func (s *Store) SetState(ctx context.Context, id string, st State, reason string) error {
	switch st {
	case StateRunning, StatePaused, StateCancelled:
	default:
		return fmt.Errorf("set rotation %s state: %q is not running, paused or cancelled", id, st)
	}
	err := setStateScript.Run(ctx, s.rdb, []string{s.metaKey(id)}, string(st), reason).Err()
	if err != nil && err.Error() == "not found" {
		return fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("set rotation %s state to %s: %w", id, st, err)
	}
	return nil
}

// Attempt is one chunk attempt as stored: its servers and, once submitted,
// its checkpoint.
type Attempt struct {
	Servers []Entry
	// Checkpointed is set once the UpdateKeypair answer is stored; from
	// then on the chunk attempt is only ever polled.
	Checkpointed bool
	RequestID    string
	SubmittedAt  time.Time
	Jobs         map[string]string // server id → job id
	Errors       map[string][2]string
	Resolved     map[string]bool
	Done         bool
	// Intents counts submit calls started for this chunk attempt.
	Intents int
}

// Attempt reads a chunk attempt. A chunk attempt that was never planned
// has no servers.
func (s *Store) Attempt(ctx context.Context, id string, chunk, attempt int) (*Attempt, error) {
	m, err := s.rdb.HGetAll(ctx, s.attemptKey(id, chunk, attempt)).Result()
	if err != nil {
		return nil, fmt.Errorf("read chunk %d attempt %d of %s: %w", chunk, attempt, id, err)
	}
	a := &Attempt{Jobs: map[string]string{}, Errors: map[string][2]string{}, Resolved: map[string]bool{}}
	if a.Servers, err = decodeEntries(m["servers"]); err != nil {
		return nil, fmt.Errorf("chunk %d attempt %d of %s: %w", chunk, attempt, id, err)
	}
	a.Checkpointed = m["cp"] == "1"
	a.RequestID = m["req"]
	if at, _ := strconv.ParseInt(m["at"], 10, 64); at > 0 {
		a.SubmittedAt = time.UnixMilli(at)
	}
	a.Done = m["done"] == "1"
	a.Intents, _ = strconv.Atoi(m["intents"])
	for k, v := range m {
		switch {
		case strings.HasPrefix(k, "j:"):
			a.Jobs[k[2:]] = v
		case strings.HasPrefix(k, "e:"):
			code, msg, _ := strings.Cut(v, "\t")
			a.Errors[k[2:]] = [2]string{code, msg}
		case strings.HasPrefix(k, "d:"):
			a.Resolved[k[2:]] = true
		}
	}
	return a, nil
}

// intentScript marks a submit call about to start, unless the chunk
// attempt has a checkpoint (returns {1}) or the rotation is not running
// (returns {2, state}); otherwise it returns {0, earlier intents}. Cancel
// closes only attempts without intents, in a script of its own, so a chunk
// is either closed or called, never both.
var intentScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'cp') == 1 then return {1, ''} end
local st = redis.call('HGET', KEYS[2], 'state')
if st ~= 'running' then return {2, st or ''} end
return {0, tostring(redis.call('HINCRBY', KEYS[1], 'intents', 1) - 1)}
`)

// Intent is what MarkIntent found.
type Intent struct {
	// Go: the call may start; Earlier calls started without a checkpoint.
	Go      bool
	Earlier int
	// Checkpointed: another task submitted the chunk attempt meanwhile.
	Checkpointed bool
	// State is the rotation's state when it is not running.
	State State
}

// MarkIntent records that a submit call for the chunk attempt is about to
// start, if the rotation is still running and nobody submitted the attempt
// meanwhile: the last check before the API call.
func (s *Store) MarkIntent(ctx context.Context, id string, chunk, attempt int) (Intent, error) {
	v, err := intentScript.Run(ctx, s.rdb, []string{s.attemptKey(id, chunk, attempt), s.metaKey(id)}).Slice()
	if err == nil && len(v) != 2 {
		err = fmt.Errorf("unexpected answer %v", v)
	}
	if err != nil {
		return Intent{}, fmt.Errorf("mark submit intent for chunk %d attempt %d of %s: %w", chunk, attempt, id, err)
	}
	code, _ := v[0].(int64)
	val, _ := v[1].(string)
	switch code {
	case 1:
		return Intent{Checkpointed: true}, nil
	case 2:
		return Intent{State: State(val)}, nil
	}
	n, _ := strconv.Atoi(val)
	return Intent{Go: true, Earlier: n}, nil
}

// ClearIntent withdraws an intent after a call the API certainly did not
// act on (it answered with an error), so it is not counted as a possible
// duplicate submission.
func (s *Store) ClearIntent(ctx context.Context, id string, chunk, attempt int) error {
	if err := s.rdb.HIncrBy(ctx, s.attemptKey(id, chunk, attempt), "intents", -1).Err(); err != nil {
		return fmt.Errorf("clear submit intent for chunk %d attempt %d of %s: %w", chunk, attempt, id, err)
	}
	return nil
}

// checkpointScript stores an UpdateKeypair answer once. ARGV: request id,
// submit time (ms), number of servers, then field/value pairs (j:<server>
// job ids, e:<server> per-server errors). An empty request id marks a chunk
// attempt closed without a call (a cancelled rotation).
var checkpointScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'cp') == 1 then return 0 end
local n = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'cp', '1', 'req', ARGV[1], 'at', ARGV[2], 'open', n)
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
redis.call('HINCRBY', KEYS[2], 'pending', -n)
redis.call('HINCRBY', KEYS[2], 'running', n)
if ARGV[1] ~= '' then
  redis.call('HINCRBY', KEYS[2], 'submitted', n)
  if tonumber(redis.call('HGET', KEYS[1], 'intents') or '0') > 1 then
    redis.call('HINCRBY', KEYS[2], 'resubmitted', 1)
  end
end
return 1
`)

// Checkpoint stores the answer of the chunk attempt's UpdateKeypair call.
// It is the first thing a submit does after the call returns: from then on
// the chunk attempt is never submitted again. It reports false when a
// checkpoint was already there.
func (s *Store) Checkpoint(ctx context.Context, id string, chunk, attempt int, servers int, requestID string, jobs map[string]string, errs map[string][2]string, at time.Time) (bool, error) {
	args := make([]any, 0, 3+2*(len(jobs)+len(errs)))
	args = append(args, requestID, at.UnixMilli(), servers)
	for sid, job := range jobs {
		args = append(args, "j:"+sid, job)
	}
	for sid, e := range errs {
		args = append(args, "e:"+sid, e[0]+"\t"+e[1])
	}
	n, err := checkpointScript.Run(ctx, s.rdb, []string{s.attemptKey(id, chunk, attempt), s.metaKey(id)}, args...).Int()
	if err != nil {
		return false, fmt.Errorf("checkpoint chunk %d attempt %d of %s: %w", chunk, attempt, id, err)
	}
	return n == 1, nil
}

// Resolution is the end of one server's part in a chunk attempt: either a
// terminal Outcome with its record, or Retry in the next attempt.
type Resolution struct {
	ServerID string
	Retry    *Entry // non-nil: the server goes into chunk attempt+1
	Outcome  Outcome
	JobID    string
	Code     string
	Message  string
	Attempts int
}

// Resolved is what Resolve did.
type Resolved struct {
	Recorded int  // resolutions recorded now (others were recorded earlier)
	Complete bool // this call resolved the attempt's last server
	Finished bool // this call finished the rotation
	Retries  int  // servers in the next attempt, when Complete
	// Advanced is the wave this call started (0: none): the previous wave
	// had finished within the error budget.
	Advanced int
}

// resolveScript records resolutions exactly once per server and attempt,
// moves the counters, halts the rotation at the first failure beyond its
// error budget, completes the attempt when its last server resolves,
// starts the next wave when the current one has finished, and finishes the
// rotation when nothing is pending or running. In a cancelled rotation a
// retry is recorded as cancelled instead, so no server joins a next attempt
// Cancel may already have closed.
// KEYS: attempt, meta, records, next attempt. ARGV: now (ms), then
// quadruples server, kind ("retry" or an outcome counter name), value (the
// next attempt's entry, or the record), the record if cancelled.
var resolveScript = redis.NewScript(`
local meta = KEYS[2]
` + budgetLua + advanceLua + `
local open = tonumber(redis.call('HGET', KEYS[1], 'open') or '0')
local recorded = 0
local first = 2
if redis.call('HEXISTS', KEYS[1], 'done') == 1 then
  first = #ARGV + 1 -- complete: its resolution markers are trimmed, nothing more to record
end
local cancelled = redis.call('HGET', meta, 'state') == 'cancelled'
for i = first, #ARGV, 4 do
  local sid, kind, val = ARGV[i], ARGV[i+1], ARGV[i+2]
  if redis.call('HSETNX', KEYS[1], 'd:' .. sid, '1') == 1 then
    open = open - 1
    recorded = recorded + 1
    redis.call('HINCRBY', meta, 'running', -1)
    if kind == 'retry' and cancelled then kind, val = 'cancelled', ARGV[i+3] end
    if kind == 'retry' then
      local cur = redis.call('HGET', KEYS[4], 'servers') or ''
      redis.call('HSET', KEYS[4], 'servers', cur .. val)
      redis.call('HINCRBY', meta, 'pending', 1)
      redis.call('HINCRBY', meta, 'retried', 1)
    else
      redis.call('HSET', KEYS[3], sid, val)
      local n = redis.call('HINCRBY', meta, kind, 1)
      redis.call('HINCRBY', meta, 'wave_open', -1)
      if kind == 'failed' then budget(n) end
    end
  end
end
if recorded > 0 then redis.call('HSET', KEYS[1], 'open', open) end
local complete, retries = 0, 0
if open <= 0 and redis.call('HSETNX', KEYS[1], 'done', '1') == 1 then
  complete = 1
  local s = redis.call('HGET', KEYS[4], 'servers')
  if s then local _, c = string.gsub(s, '\n', '') retries = c end
  -- per-server fields are done with: outcomes (and job ids) are in the records
  local trim = {}
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    local p = string.sub(f, 1, 2)
    if p == 'd:' or p == 'e:' or p == 'j:' then trim[#trim + 1] = f end
  end
  if #trim > 0 then redis.call('HDEL', KEYS[1], unpack(trim)) end
end
local advanced = 0
if recorded > 0 then advanced = advance() end
` + finishLua + `
return {recorded, complete, finished, retries, advanced}
`)

// budgetLua halts a running or paused rotation whose failed count has just
// gone beyond max_errors (-1: no budget), naming the count that tripped it.
const budgetLua = `
local function budget(failed)
  local st = redis.call('HGET', meta, 'state')
  local maxe = tonumber(redis.call('HGET', meta, 'max_errors') or '-1')
  if (st == 'running' or st == 'paused') and maxe >= 0 and failed > maxe then
    redis.call('HSET', meta, 'state', 'failed', 'reason',
      'error budget exceeded: ' .. failed .. ' failed > max ' .. maxe .. '; resume with a larger --max-errors, or cancel')
  end
end
`

// advanceLua starts the next wave of a running rotation whose current
// wave has no server left that is not terminal, pausing it there with
// pause_after_wave. It returns the new wave, or 0.
const advanceLua = `
local function advance()
  local w = tonumber(redis.call('HGET', meta, 'wave') or '0')
  local n = tonumber(redis.call('HGET', meta, 'waves') or '0')
  if w >= n or tonumber(redis.call('HGET', meta, 'wave_open') or '1') > 0
     or redis.call('HGET', meta, 'state') ~= 'running' then
    return 0
  end
  redis.call('HSET', meta, 'wave', w + 1, 'wave_open', redis.call('HGET', meta, 'wave_size:' .. (w + 1)))
  if redis.call('HGET', meta, 'pause_after_wave') == '1' then
    redis.call('HSET', meta, 'state', 'paused', 'reason',
      'wave ' .. w .. ' of ' .. n .. ' finished; paused after the wave: resume to start wave ' .. (w + 1))
  end
  return w + 1
end
`

// finishScript finishes a rotation with nothing pending or running. KEYS:
// meta. ARGV: now (ms).
var finishScript = redis.NewScript(`
local meta = KEYS[1]
` + finishLua + `
return finished
`)

// finishLua sets finished_at once, when nothing is pending or running, and
// the final state: cancelled stays cancelled, otherwise failed if any
// server failed, else succeeded.
const finishLua = `
local finished = 0
if tonumber(redis.call('HGET', meta, 'pending')) <= 0 and tonumber(redis.call('HGET', meta, 'running')) <= 0
   and redis.call('HSETNX', meta, 'finished_at', ARGV[1]) == 1 then
  finished = 1
  local st = redis.call('HGET', meta, 'state')
  if st ~= 'cancelled' then
    if tonumber(redis.call('HGET', meta, 'failed')) > 0 then st = 'failed' else st = 'succeeded' end
    redis.call('HSET', meta, 'state', st)
  end
end
`

// Resolve records resolutions of a chunk attempt. Each server is resolved
// at most once per attempt, however many pollers race.
func (s *Store) Resolve(ctx context.Context, id string, chunk, attempt int, rs []Resolution, now time.Time) (Resolved, error) {
	args := make([]any, 0, 1+4*len(rs))
	args = append(args, now.UnixMilli())
	for _, r := range rs {
		rec := record{Outcome: r.Outcome, Attempts: r.Attempts, JobID: r.JobID, Code: r.Code, Message: r.Message, FinishedAt: now}
		if r.Retry != nil {
			rec.Outcome = OutcomeCancelled
			args = append(args, r.ServerID, "retry", encodeEntries([]Entry{*r.Retry}), encodeRecord(rec))
			continue
		}
		args = append(args, r.ServerID, string(r.Outcome), encodeRecord(rec), "")
	}
	keys := []string{s.attemptKey(id, chunk, attempt), s.metaKey(id), s.recordsKey(id), s.attemptKey(id, chunk, attempt+1)}
	v, err := resolveScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
	if err != nil {
		return Resolved{}, fmt.Errorf("record outcomes of chunk %d attempt %d of %s: %w", chunk, attempt, id, err)
	}
	return Resolved{Recorded: int(v[0]), Complete: v[1] == 1, Finished: v[2] == 1, Retries: int(v[3]), Advanced: int(v[4])}, nil
}

// resumeScript sets a paused or halted rotation running again, with a new
// error budget if ARGV[2] >= 0, refusing while the budget is still
// exceeded, and starts the next wave if the current one has finished. It
// returns the current wave. KEYS: meta. ARGV: now (ms), max errors or -1.
var resumeScript = redis.NewScript(`
local meta = KEYS[1]
` + advanceLua + `
local st = redis.call('HGET', meta, 'state')
if not st then return redis.error_reply('not found') end
if redis.call('HEXISTS', meta, 'finished_at') == 1 then return redis.error_reply('rotation has finished (' .. st .. ')') end
if st == 'cancelled' then return redis.error_reply('rotation is cancelled') end
if tonumber(ARGV[2]) >= 0 then redis.call('HSET', meta, 'max_errors', ARGV[2]) end
local failed = tonumber(redis.call('HGET', meta, 'failed'))
local maxe = tonumber(redis.call('HGET', meta, 'max_errors') or '-1')
if maxe >= 0 and failed > maxe then
  return redis.error_reply('error budget still exceeded: ' .. failed .. ' failed > max ' .. maxe .. '; raise it with --max-errors')
end
redis.call('HSET', meta, 'state', 'running')
redis.call('HDEL', meta, 'reason')
advance()
return tonumber(redis.call('HGET', meta, 'wave') or '0')
`)

// Resume sets a paused or halted rotation running, with a new error budget
// of maxErrors servers unless maxErrors < 0, and returns the wave to
// submit (it may have just started).
func (s *Store) Resume(ctx context.Context, id string, maxErrors int) (wave int, err error) {
	wave, err = resumeScript.Run(ctx, s.rdb, []string{s.metaKey(id)}, time.Now().UnixMilli(), maxErrors).Int()
	if err != nil && err.Error() == "not found" {
		return 0, fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("resume rotation %s: %w", id, err)
	}
	return wave, nil
}

// closeScript records every server of a chunk's attempts that were never
// submitted (no checkpoint, no submit call started) as cancelled, and
// finishes the rotation if nothing is left. KEYS: meta, records, then the
// chunk's attempt keys in order. ARGV: now (ms), now (s), message.
var closeScript = redis.NewScript(`
local meta = KEYS[1]
local closed = 0
for a = 3, #KEYS do
  local k = KEYS[a]
  local servers = redis.call('HGET', k, 'servers')
  if servers and redis.call('HEXISTS', k, 'cp') == 0 and tonumber(redis.call('HGET', k, 'intents') or '0') <= 0 then
    local rec = 'cancelled\t' .. (a - 2) .. '\t\t\t' .. ARGV[3] .. '\t' .. ARGV[2]
    local n = 0
    for sid in string.gmatch(servers, '([^\t\n]+)\t[^\n]*\n') do
      if redis.call('HSETNX', KEYS[2], sid, rec) == 1 then n = n + 1 end
    end
    redis.call('HSET', k, 'cp', '1', 'req', '', 'at', ARGV[1], 'open', 0, 'done', '1')
    redis.call('HINCRBY', meta, 'pending', -n)
    redis.call('HINCRBY', meta, 'cancelled', n)
    closed = closed + n
  end
end
` + finishLua + `
return {closed, finished}
`)

// Cancel cancels a rotation and records every server not submitted yet as
// cancelled at once, retries waiting for their backoff included, instead
// of leaving that to each chunk's submit task. Chunk attempts being
// submitted or already submitted are left to their tasks: their jobs'
// outcomes are recorded, and their failed servers are not retried. It
// reports how many servers it closed and whether that finished the rotation.
func (s *Store) Cancel(ctx context.Context, id string, now time.Time) (closed int, finished bool, err error) {
	if err := s.SetState(ctx, id, StateCancelled, "cancelled by an operator"); err != nil {
		return 0, false, err
	}
	rot, err := s.Rotation(ctx, id)
	if err != nil {
		return 0, false, err
	}
	msg := "rotation cancelled before this chunk was submitted"
	keys := make([]string, 2, 2+rot.MaxAttempts)
	keys[0], keys[1] = s.metaKey(id), s.recordsKey(id)
	for c := 1; c <= rot.Chunks; c++ {
		keys = keys[:2]
		for a := 1; a <= rot.MaxAttempts; a++ {
			keys = append(keys, s.attemptKey(id, c, a))
		}
		v, err := closeScript.Run(ctx, s.rdb, keys, now.UnixMilli(), now.Unix(), msg).Int64Slice()
		if err != nil {
			return closed, finished, fmt.Errorf("cancel %s: close chunk %d: %w", id, c, err)
		}
		closed += int(v[0])
		finished = finished || v[1] == 1
	}
	return closed, finished, nil
}

// finishIfDone finishes a rotation with nothing left to do (every server
// skipped at planning time).
func (s *Store) finishIfDone(ctx context.Context, id string, now time.Time) (bool, error) {
	n, err := finishScript.Run(ctx, s.rdb, []string{s.metaKey(id)}, now.UnixMilli()).Int()
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
	pipe.Expire(ctx, s.recordsKey(r.ID), d)
	for c := 0; c <= r.Chunks; c++ {
		for a := 1; a <= r.MaxAttempts; a++ {
			pipe.Expire(ctx, s.attemptKey(r.ID, c, a), d)
		}
		if pipe.Len() >= 1000 {
			if _, err := pipe.Exec(ctx); err != nil {
				return fmt.Errorf("set retention of %s: %w", r.ID, err)
			}
		}
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
	JobID      string
	Code       string
	Message    string
	FinishedAt time.Time
}

func encodeRecord(r record) string {
	msg := strings.NewReplacer("\t", " ", "\n", " ").Replace(r.Message)
	return strings.Join([]string{string(r.Outcome), strconv.Itoa(r.Attempts), r.JobID, r.Code, msg,
		strconv.FormatInt(r.FinishedAt.Unix(), 10)}, "\t")
}

func decodeRecord(s string) (record, error) {
	f := strings.Split(s, "\t")
	if len(f) != 6 {
		return record{}, fmt.Errorf("corrupt outcome record %q", s)
	}
	n, _ := strconv.Atoi(f[1])
	ts, _ := strconv.ParseInt(f[5], 10, 64)
	return record{Outcome: Outcome(f[0]), Attempts: n, JobID: f[2], Code: f[3], Message: f[4], FinishedAt: time.Unix(ts, 0).UTC()}, nil
}
