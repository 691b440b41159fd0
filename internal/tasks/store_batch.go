package tasks

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Batch is one UpdateKeypair call's worth of servers as stored: its
// servers and, once submitted, its checkpoint.
type Batch struct {
	N       int
	Servers []Entry
	// Checkpointed is set once the UpdateKeypair answer is stored; from
	// then on the batch is only ever polled.
	Checkpointed bool
	RequestID    string
	SubmittedAt  time.Time
	Jobs         map[string]string    // server id → job id
	Errors       map[string][2]string // server id → code, message the answer gave
	// Ended marks servers whose job succeeded and wait for verification.
	Ended    map[string]bool
	Resolved map[string]bool
	Done     bool
	// Intents counts submit calls started for this batch.
	Intents int
	// TickGen is the tick chain its checkpoint started (0: none).
	TickGen int
	// Round counts its polls.
	Round int
	// Rejected counts the ListJobs calls for this batch alone that the API
	// rejected for good (a 4xx other than 401, 403 and 429).
	Rejected int
	// Close is the outcome, code and message a batch closed without jobs
	// gives its servers, stored with the checkpoint so a submit run again
	// after dying before the outcomes were recorded records them.
	Close [3]string
}

// Batch reads a batch. A batch that was never made has no servers.
func (s *Store) Batch(ctx context.Context, id string, n int) (*Batch, error) {
	m, err := s.rdb.HGetAll(ctx, s.batchKey(id, n)).Result()
	if err != nil {
		return nil, fmt.Errorf("read batch %d of %s: %w", n, id, err)
	}
	b := &Batch{N: n, Jobs: map[string]string{}, Errors: map[string][2]string{}, Ended: map[string]bool{}, Resolved: map[string]bool{}}
	if b.Servers, err = decodeEntries(m["servers"]); err != nil {
		return nil, fmt.Errorf("batch %d of %s: %w", n, id, err)
	}
	b.Checkpointed = m["cp"] == "1"
	b.RequestID = m["req"]
	if at, _ := strconv.ParseInt(m["at"], 10, 64); at > 0 {
		b.SubmittedAt = time.UnixMilli(at)
	}
	b.Done = m["done"] == "1"
	b.Intents, _ = strconv.Atoi(m["intents"])
	b.TickGen, _ = strconv.Atoi(m["tg"])
	b.Round, _ = strconv.Atoi(m["round"])
	b.Rejected, _ = strconv.Atoi(m["rej"])
	if c, ok := m["close"]; ok {
		f := strings.SplitN(c, "\t", 3)
		copy(b.Close[:], f)
	}
	for k, v := range m {
		switch {
		case strings.HasPrefix(k, "j:"):
			b.Jobs[k[2:]] = v
		case strings.HasPrefix(k, "e:"):
			code, msg, _ := strings.Cut(v, "\t")
			b.Errors[k[2:]] = [2]string{code, msg}
		case strings.HasPrefix(k, "p:"):
			b.Ended[k[2:]] = true
		case strings.HasPrefix(k, "d:"):
			b.Resolved[k[2:]] = true
		}
	}
	return b, nil
}

// intentScript marks a submit call about to start, unless the batch has a
// checkpoint (returns {1}) or the rotation is not running (returns {2,
// state}); otherwise it returns {0, earlier intents}. Cancel closes only
// batches without intents, in a script of its own, so a batch is either
// closed or called, never both.
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
	// Checkpointed: another task submitted the batch meanwhile.
	Checkpointed bool
	// State is the rotation's state when it is not running.
	State State
}

// MarkIntent records that a submit call for the batch is about to start, if
// the rotation is still running and nobody submitted the batch meanwhile:
// the last check before the API call.
func (s *Store) MarkIntent(ctx context.Context, id string, n int) (Intent, error) {
	v, err := intentScript.Run(ctx, s.rdb, []string{s.batchKey(id, n), s.metaKey(id)}).Slice()
	if err == nil && len(v) != 2 {
		err = fmt.Errorf("unexpected answer %v", v)
	}
	if err != nil {
		return Intent{}, fmt.Errorf("mark submit intent for batch %d of %s: %w", n, id, err)
	}
	code, _ := v[0].(int64)
	val, _ := v[1].(string)
	switch code {
	case 1:
		return Intent{Checkpointed: true}, nil
	case 2:
		return Intent{State: State(val)}, nil
	}
	e, _ := strconv.Atoi(val)
	return Intent{Go: true, Earlier: e}, nil
}

// ClearIntent withdraws an intent after a call the API certainly did not
// act on (it answered with an error), so it is not counted as a possible
// duplicate submission.
func (s *Store) ClearIntent(ctx context.Context, id string, n int) error {
	if err := s.rdb.HIncrBy(ctx, s.batchKey(id, n), "intents", -1).Err(); err != nil {
		return fmt.Errorf("clear submit intent for batch %d of %s: %w", n, id, err)
	}
	return nil
}

// PollRejected counts a ListJobs call for batch n alone that the API
// rejected for good, and returns how many there have been.
func (s *Store) PollRejected(ctx context.Context, id string, n int) (int, error) {
	k, err := s.rdb.HIncrBy(ctx, s.batchKey(id, n), "rej", 1).Result()
	if err != nil {
		return 0, fmt.Errorf("count rejected polls of batch %d of %s: %w", n, id, err)
	}
	return int(k), nil
}

// wakeLua starts a new chain of ticks for work due at due unless a chain
// is alive and comes in time: a chain's next tick is due at tick_at (or,
// while one runs, tick_at is its lease); a chain whose tick is overdue by
// more than stale is taken for lost, and one whose next tick is scheduled
// later than due is superseded (its tick finds a newer chain and does
// nothing). A running tick picks up new work itself. It returns the new
// chain's generation, or 0.
const wakeLua = `
local function wake(due, now, stale)
  local at = tonumber(redis.call('HGET', meta, 'tick_at') or '-1')
  local running = redis.call('HGET', meta, 'tick_running') == '1'
  if at >= 0 and at >= now - stale and (running or at <= due + 500) then return 0 end
  local g = redis.call('HINCRBY', meta, 'tgen', 1)
  redis.call('HSET', meta, 'tseq', 0, 'tick_at', due, 'tick_running', 0)
  return g
end
`

// checkpointScript stores an UpdateKeypair answer once and puts the batch
// up for its first poll. KEYS: batch, meta, polls, fresh. ARGV: request id,
// submit time (ms), number of servers, first poll (ms), now (ms), stale
// (ms), batch number, then field/value pairs (j:<server> job ids,
// e:<server> per-server errors). An empty request id marks a batch closed
// without a call. It returns {1 if stored now, the tick chain started}.
var checkpointScript = redis.NewScript(`
local meta = KEYS[2]
` + wakeLua + `
if redis.call('HEXISTS', KEYS[1], 'cp') == 1 then return {0, 0} end
local n = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'cp', '1', 'req', ARGV[1], 'at', ARGV[2], 'open', n)
if tonumber(ARGV[7]) <= tonumber(redis.call('HGET', meta, 'chunks') or '0') then
  redis.call('HINCRBY', meta, 'sent', 1) -- a first attempt's submit ended: the next chunk is enqueued
end
for i = 8, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
redis.call('SREM', KEYS[4], ARGV[7])
redis.call('HINCRBY', meta, 'pending', -n)
redis.call('HINCRBY', meta, 'running', n)
local gen = 0
if ARGV[1] ~= '' then
  redis.call('HINCRBY', meta, 'submitted', n)
  if tonumber(redis.call('HGET', KEYS[1], 'intents') or '0') > 1 then
    redis.call('HINCRBY', meta, 'resubmitted', 1)
  end
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[7])
  gen = wake(tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]))
  if gen > 0 then redis.call('HSET', KEYS[1], 'tg', gen) end
end
return {1, gen}
`)

// tickStale is how long a chain's next tick may be overdue before the
// chain is taken for lost (its task gone with a Redis that lost writes)
// and a new one is started: beyond asynq's own recovery of a dead worker's
// task (30 s lease, then up to a minute of its recoverer).
const tickStale = 3 * time.Minute

// Checkpointed is what Checkpoint did.
type Checkpointed struct {
	// First: this call stored the checkpoint (false: one was there).
	First bool
	// Tick is the tick chain this checkpoint started; its first tick must
	// be enqueued (0: a chain is alive).
	Tick int
}

// Checkpoint stores the answer of the batch's UpdateKeypair call and puts
// the batch up for its first poll at firstPoll. It is the first thing a
// submit does after the call returns: from then on the batch is never
// submitted again.
func (s *Store) Checkpoint(ctx context.Context, id string, n, servers int, requestID string, jobs map[string]string, errs map[string][2]string, at, firstPoll time.Time) (Checkpointed, error) {
	return s.checkpoint(ctx, id, n, servers, requestID, jobs, errs, at, firstPoll)
}

// CloseBatch checkpoints batch n as closed without a call: its servers are
// to get outcome o with code and msg, which the checkpoint keeps until
// Resolve has recorded them (see Batch.Close).
func (s *Store) CloseBatch(ctx context.Context, id string, n, servers int, o Outcome, code, msg string, at time.Time) (bool, error) {
	cp, err := s.checkpoint(ctx, id, n, servers, "", nil, nil, at, at, "close", string(o)+"\t"+code+"\t"+oneLine(msg))
	return cp.First, err
}

func (s *Store) checkpoint(ctx context.Context, id string, n, servers int, requestID string, jobs map[string]string, errs map[string][2]string, at, firstPoll time.Time, fields ...any) (Checkpointed, error) {
	args := make([]any, 0, 7+2*(len(jobs)+len(errs))+len(fields))
	args = append(args, requestID, at.UnixMilli(), servers, firstPoll.UnixMilli(), at.UnixMilli(), tickStale.Milliseconds(), n)
	args = append(args, fields...)
	for sid, job := range jobs {
		args = append(args, "j:"+sid, job)
	}
	for sid, e := range errs {
		args = append(args, "e:"+sid, e[0]+"\t"+e[1])
	}
	keys := []string{s.batchKey(id, n), s.metaKey(id), s.pollsKey(id), s.freshKey(id)}
	v, err := checkpointScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
	if err != nil {
		return Checkpointed{}, fmt.Errorf("checkpoint batch %d of %s: %w", n, id, err)
	}
	return Checkpointed{First: v[0] == 1, Tick: int(v[1])}, nil
}

// wakeScript starts a chain of ticks for a rotation with work in flight
// unless one is alive. KEYS: meta, polls, retry, verify, fresh. ARGV: due,
// now, stale (ms).
var wakeScript = redis.NewScript(`
local meta = KEYS[1]
` + wakeLua + `
if redis.call('HEXISTS', meta, 'finished_at') == 1 then return 0 end
if redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4]) + redis.call('SCARD', KEYS[5]) == 0 then
  return 0
end
return wake(tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]))
`)

// Wake starts a chain of ticks for the rotation if it has work in flight
// and no live chain, and returns the chain to enqueue the first tick of (0:
// none needed). Start's re-runs and resume call it, so an operator can
// revive a rotation whose tick was lost.
func (s *Store) Wake(ctx context.Context, id string, due, now time.Time) (int, error) {
	keys := []string{s.metaKey(id), s.pollsKey(id), s.retryKey(id), s.verifyKey(id), s.freshKey(id)}
	g, err := wakeScript.Run(ctx, s.rdb, keys, due.UnixMilli(), now.UnixMilli(), tickStale.Milliseconds()).Int()
	if err != nil {
		return 0, fmt.Errorf("wake rotation %s: %w", id, err)
	}
	return g, nil
}

// claimScript lets a tick run if it belongs to the live chain and no later
// tick of it has started. KEYS: meta. ARGV: gen, seq, lease end (ms).
var claimScript = redis.NewScript(`
if tonumber(redis.call('HGET', KEYS[1], 'tgen') or '0') ~= tonumber(ARGV[1]) then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'tseq') or '0') > tonumber(ARGV[2]) then return 0 end
redis.call('HSET', KEYS[1], 'tseq', ARGV[2], 'tick_at', ARGV[3], 'tick_running', 1)
return 1
`)

// ClaimTick reports whether tick seq of chain gen may run: a tick of an
// older chain, or one whose successor has started, may not. It holds the
// chain alive until lease.
func (s *Store) ClaimTick(ctx context.Context, id string, gen, seq int, lease time.Time) (bool, error) {
	ok, err := claimScript.Run(ctx, s.rdb, []string{s.metaKey(id)}, gen, seq, lease.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("claim tick %d.%d of %s: %w", gen, seq, id, err)
	}
	return ok == 1, nil
}

// FirstTickDue reports whether chain gen's first tick has not run yet, so
// a submit run again after a crash enqueues it (asynq refuses it if it is
// there).
func (s *Store) FirstTickDue(ctx context.Context, id string, gen int) (bool, error) {
	v, err := s.rdb.HMGet(ctx, s.metaKey(id), "tgen", "tseq").Result()
	if err != nil {
		return false, fmt.Errorf("read tick chain of %s: %w", id, err)
	}
	g, _ := v[0].(string)
	q, _ := v[1].(string)
	return g == strconv.Itoa(gen) && (q == "" || q == "0"), nil
}

// nextTickScript keeps a chain alive for its next tick at due, or at the
// first poll due before it (a batch checkpointed while the tick ran), or
// ends it when the rotation has nothing in flight. KEYS: meta, polls,
// retry, verify, fresh. ARGV: gen, due (ms), soonest (ms). Returns the
// next tick's time, 0 when the chain ends.
var nextTickScript = redis.NewScript(`
if tonumber(redis.call('HGET', KEYS[1], 'tgen') or '0') ~= tonumber(ARGV[1]) then return 0 end
if redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[4]) + redis.call('SCARD', KEYS[5]) == 0 then
  redis.call('HDEL', KEYS[1], 'tick_at', 'tick_running')
  return 0
end
local due = tonumber(ARGV[2])
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] and tonumber(first[2]) < due then due = math.max(tonumber(first[2]), tonumber(ARGV[3])) end
redis.call('HSET', KEYS[1], 'tick_at', due, 'tick_running', 0)
return due
`)

// NextTick returns when chain gen's next tick is due: at due, or at the
// first poll due before it but no sooner than soonest; zero when the
// rotation has nothing in flight and the chain ends (the next checkpoint
// starts a new one).
func (s *Store) NextTick(ctx context.Context, id string, gen int, due, soonest time.Time) (time.Time, error) {
	keys := []string{s.metaKey(id), s.pollsKey(id), s.retryKey(id), s.verifyKey(id), s.freshKey(id)}
	ms, err := nextTickScript.Run(ctx, s.rdb, keys, gen, due.UnixMilli(), soonest.UnixMilli()).Int64()
	if err != nil {
		return time.Time{}, fmt.Errorf("schedule next tick of %s: %w", id, err)
	}
	if ms == 0 {
		return time.Time{}, nil
	}
	return time.UnixMilli(ms), nil
}

// DuePolls returns up to limit batches: those whose next poll is due at
// now, then (soon) those due after now up to ahead, and when the first poll
// after now is due (zero: none).
func (s *Store) DuePolls(ctx context.Context, id string, now, ahead time.Time, limit int) (due, soon []int, next time.Time, err error) {
	zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: s.pollsKey(id), Start: 0, Stop: int64(limit)}).Result()
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("read due polls of %s: %w", id, err)
	}
	for _, z := range zs {
		at := time.UnixMilli(int64(z.Score))
		if at.After(now) && next.IsZero() {
			next = at
		}
		if at.After(ahead) || len(due)+len(soon) == limit {
			if next.IsZero() {
				next = at
			}
			break
		}
		n, _ := strconv.Atoi(z.Member.(string))
		if at.After(now) {
			soon = append(soon, n)
		} else {
			due = append(due, n)
		}
	}
	return due, soon, next, nil
}

// Resolution is the end of one server's part in a batch: a terminal
// Outcome with its record, Retry in a later batch, or (Verify) a job that
// succeeded and waits for its keypair to be read back.
type Resolution struct {
	ServerID string
	Outcome  Outcome
	// Retry, when not nil, puts the server (attempt+1) in the retry pool
	// until RetryAt.
	Retry   *Entry
	RetryAt time.Time
	// Verify: the job succeeded; the server waits in the verification set
	// (Outcome is not recorded yet).
	Verify bool
	// Unknown (with Verify): the job's outcome is not known: the
	// verification stage reads the server's keypair; on the target it is
	// succeeded, otherwise it is retried (or fails with the unknown code,
	// CodePollUnknown, when no attempt is left).
	Unknown  bool
	JobID    string
	Code     string
	Message  string
	Attempts int
	// Entry is the server as the batch holds it (its keypair and place in
	// the project's server list).
	Entry Entry
	// member is the server's entry in the verification set, when it is in.
	member string
}

// Resolved is what Resolve did.
type Resolved struct {
	Recorded int  // resolutions recorded now (others were recorded earlier)
	Complete bool // this call resolved the batch's last server
	Finished bool // this call finished the rotation
	// Advanced is the wave this call started (0: none): the previous wave
	// had finished within the error budget.
	Advanced int
}

// resolveScript records resolutions exactly once per server and batch,
// moves the counters, halts the rotation at the first failure beyond its
// error budget, completes the batch when its last server resolves, starts
// the next wave when the current one has finished, and finishes the
// rotation when nothing is pending or running. In a cancelled rotation a
// retry is recorded as cancelled instead.
//
// Each outcome also counts in the rotation's stats (see Store.Stats): in
// the history bucket of now, and a failure under its error code, with the
// first few servers as examples.
//
// KEYS: batch, meta, records, polls, retry, verify, pages, stats, history. ARGV: now (ms),
// batch number, next poll (ms; 0: no more polls, -1: unchanged), then
// septuples: server, kind (verify, retry, or an outcome counter name),
// value (the record, or the retry entry), score (verification place, or
// retry time), member (verification entry), list page (-1: none; "w:p"
// counts page p's first attempts of wave w in flight, "r:w:p" its retries)
// — and for a retry the record to write if the rotation is cancelled, in
// the member — and its entry in the verification set (when it waits there).
var resolveScript = redis.NewScript(`
local meta, hist, hist_at = KEYS[2], KEYS[9], ARGV[1]
local bucket = tostring(math.floor(tonumber(ARGV[1]) / ` + statsBucketMs + `))
` + historyLua + budgetLua + advanceLua + failureLua + `
local function left(page)
  if page ~= '-1' then redis.call('HINCRBY', KEYS[7], page, -1) end
end
if tonumber(ARGV[3]) > 0 then
  redis.call('ZADD', KEYS[4], ARGV[3], ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'round', 1)
elseif tonumber(ARGV[3]) == 0 then redis.call('ZREM', KEYS[4], ARGV[2]) end
local open = tonumber(redis.call('HGET', KEYS[1], 'open') or '0')
local recorded = 0
local first = 4
if redis.call('HEXISTS', KEYS[1], 'done') == 1 then
  first = #ARGV + 1 -- complete: its resolution markers are trimmed, nothing more to record
end
local cancelled = redis.call('HGET', meta, 'state') == 'cancelled'
for i = first, #ARGV, 7 do
  local sid, kind, val, score, member, page, waiting = ARGV[i], ARGV[i+1], ARGV[i+2], ARGV[i+3], ARGV[i+4], ARGV[i+5], ARGV[i+6]
  if kind == 'verify' then
    if redis.call('HEXISTS', KEYS[1], 'd:' .. sid) == 0 and redis.call('HSETNX', KEYS[1], 'p:' .. sid, '1') == 1 then
      redis.call('ZADD', KEYS[6], score, member)
      redis.call('HINCRBY', meta, 'verifying', 1)
      left(page)
      recorded = recorded + 1
    end
  elseif redis.call('HSETNX', KEYS[1], 'd:' .. sid, '1') == 1 then
    open = open - 1
    recorded = recorded + 1
    redis.call('HINCRBY', meta, 'running', -1)
    local verified = redis.call('HEXISTS', KEYS[1], 'p:' .. sid) == 1
    if verified then
      redis.call('ZREM', KEYS[6], waiting)
      redis.call('HINCRBY', meta, 'verifying', -1)
    end
    if kind == 'retry' and cancelled then kind, val = 'cancelled', member end
    if kind == 'retry' then
      -- A first attempt leaves its page's count of first attempts in
      -- flight (the page is read without waiting for it) and joins the
      -- page's count of retries in flight; a retry stays counted there.
      if string.sub(page, 1, 2) == 'r:' then
        if verified then redis.call('HINCRBY', KEYS[7], page, 1) end
      elseif page ~= '-1' then
        if not verified then left(page) end
        redis.call('HINCRBY', KEYS[7], 'r:' .. page, 1)
      end
      redis.call('ZADD', KEYS[5], score, val)
      redis.call('HINCRBY', meta, 'pending', 1)
      redis.call('HINCRBY', meta, 'retried', 1)
    else
      redis.call('HSET', KEYS[3], sid, val)
      local n = redis.call('HINCRBY', meta, kind, 1)
      redis.call('HINCRBY', meta, 'wave_open', -1)
      if not verified then left(page) end
      redis.call('HINCRBY', KEYS[8], 't:' .. bucket, 1)
      if kind == 'failed' then
        budget(n)
        failure(sid, val)
      end
    end
  end
end
if recorded > 0 then redis.call('HSET', KEYS[1], 'open', open) end
local complete = 0
if open <= 0 and redis.call('HSETNX', KEYS[1], 'done', '1') == 1 then
  complete = 1
  redis.call('ZREM', KEYS[4], ARGV[2])
  -- per-server fields are done with: outcomes (and job ids) are in the records
  local trim = {}
  for _, f in ipairs(redis.call('HKEYS', KEYS[1])) do
    local p = string.sub(f, 1, 2)
    if p == 'd:' or p == 'e:' or p == 'j:' or p == 'p:' then trim[#trim + 1] = f end
  end
  if #trim > 0 then redis.call('HDEL', KEYS[1], unpack(trim)) end
end
local advanced = 0
if recorded > 0 then advanced = advance() end
` + finishLua + `
return {recorded, complete, finished, advanced}
`)

// budgetLua halts a running or paused rotation whose failed count has just
// gone beyond max_errors (-1: no budget), naming the count that tripped it,
// in its reason and its history (historyLua).
const budgetLua = `
local function budget(failed)
  local st = redis.call('HGET', meta, 'state')
  local maxe = tonumber(redis.call('HGET', meta, 'max_errors') or '-1')
  if (st == 'running' or st == 'paused') and maxe >= 0 and failed > maxe then
    redis.call('HSET', meta, 'state', 'failed', 'reason',
      'error budget exceeded: ' .. failed .. ' failed > max ' .. maxe .. '; resume with a larger --max-errors, or cancel')
    local m = redis.call('HMGET', meta, 'succeeded', 'pending', 'running', 'total', 'wave', 'waves')
    history('halted_budget', '` + SystemActor + `', failed .. ' failed > max ' .. maxe .. ' in wave ' .. m[5] .. ' of ' .. m[6] ..
      '; ' .. m[1] .. ' succeeded, ' .. m[3] .. ' running, ' .. m[2] .. ' pending of ' .. m[4])
  end
end
`

// haltScript halts a running or paused rotation that has not finished
// (state failed) with a reason, as budgetLua does for its error budget; a
// rotation already halted keeps its state and gets the reason added, once.
// With ARGV[2] set it also ends the rotation's tick chain: the live chain's
// ticks find a newer generation and stop, and the next Wake (resume, or a
// checkpoint) starts a new one. A new reason goes into the history once.
// With ARGV[4] >= 0, a halt for the rotation's group read when the group's
// halt had been lifted ARGV[4] times, it leaves alone a part resumed after
// a later lift (glifts, recorded by resumeScript). KEYS: meta, history.
// ARGV: reason, end chain (1/0), now (ms), the group's lifts (-1: not a
// group's halt). Returns 1 when the rotation is halted, 0 when it is not
// (cancelled, finished, unknown, or resumed since).
var haltScript = redis.NewScript(`
local meta, hist, hist_at = KEYS[1], KEYS[2], ARGV[3]
` + historyLua + `
local st = redis.call('HGET', meta, 'state')
if redis.call('HEXISTS', meta, 'finished_at') == 1 then return 0 end
local lifts = tonumber(ARGV[4])
if lifts >= 0 and tonumber(redis.call('HGET', meta, 'glifts') or '0') > lifts then return 0 end
if st == 'running' or st == 'paused' then
  redis.call('HSET', meta, 'state', 'failed', 'reason', ARGV[1])
  history('halted', '` + SystemActor + `', ARGV[1])
elseif st == 'failed' then
  local cur = redis.call('HGET', meta, 'reason') or ''
  if cur == '' then
    redis.call('HSET', meta, 'reason', ARGV[1])
    history('halted', '` + SystemActor + `', ARGV[1])
  elseif not string.find(cur, ARGV[1], 1, true) then
    redis.call('HSET', meta, 'reason', cur .. '; ' .. ARGV[1])
    history('halted', '` + SystemActor + `', ARGV[1])
  end
else
  return 0
end
if ARGV[2] == '1' then
  redis.call('HINCRBY', meta, 'tgen', 1)
  redis.call('HSET', meta, 'tseq', 0)
  redis.call('HDEL', meta, 'tick_at', 'tick_running')
end
return 1
`)

// Halt halts a running or paused rotation with reason (state failed, until
// resumed or cancelled), and with endChain ends its tick chain. It reports
// whether the rotation is halted now: false for a cancelled or finished
// one.
func (s *Store) Halt(ctx context.Context, id, reason string, endChain bool) (bool, error) {
	return s.halt(ctx, id, reason, endChain, -1)
}

// HaltForGroup halts part id of a group as Halt does, for a halt of the
// group read when its halt had been lifted lifts times (Group.Lifts),
// unless the part was resumed after a later lift (Resume records the
// group's lifts): a task that read the group halted just before a resume
// of the whole lifted it does not halt a part the resume set running.
func (s *Store) HaltForGroup(ctx context.Context, id, reason string, lifts int64) (bool, error) {
	return s.halt(ctx, id, reason, false, lifts)
}

func (s *Store) halt(ctx context.Context, id, reason string, endChain bool, lifts int64) (bool, error) {
	n, err := haltScript.Run(ctx, s.rdb, []string{s.metaKey(id), s.historyKey(id)}, reason, flag(endChain), time.Now().UnixMilli(), lifts).Int()
	if err != nil {
		return false, fmt.Errorf("halt rotation %s: %w", id, err)
	}
	return n == 1, nil
}

// failureLua counts a failed server under its error code in the stats
// (KEYS[8]) of the rotation and keeps the first statsExamples of each code
// as examples: the server and its record.
const failureLua = `
local function failure(sid, rec)
  local code = string.match(rec, '^[^\t]*\t[^\t]*\t[^\t]*\t[^\t]*\t([^\t]*)')
  if code == nil or code == '' then code = '-' end
  local n = redis.call('HINCRBY', KEYS[8], 'c:' .. code, 1)
  redis.call('HINCRBY', KEYS[8], 'f:' .. bucket, 1)
  if n <= ` + statsExamples + ` then redis.call('HSET', KEYS[8], 'x' .. n .. ':' .. code, sid .. '\t' .. rec) end
end
`

// advanceLua starts the next wave of a running rotation whose current
// wave has no server left that is not terminal, pausing it there with
// pause_after_wave (which the history records: historyLua). It returns
// the new wave, or 0.
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
    local reason = 'wave ' .. w .. ' of ' .. n .. ' finished; paused after the wave: resume to start wave ' .. (w + 1)
    redis.call('HSET', meta, 'state', 'paused', 'reason', reason)
    history('paused', '` + SystemActor + `', reason .. ' (' .. redis.call('HGET', meta, 'failed') .. ' failed so far)')
  end
  return w + 1
end
`

// finishScript finishes a rotation with nothing pending or running. KEYS:
// meta, history. ARGV: now (ms).
var finishScript = redis.NewScript(`
local meta, hist, hist_at = KEYS[1], KEYS[2], ARGV[1]
` + historyLua + finishLua + `
return finished
`)

// finishLua sets finished_at once, when nothing is pending or running, and
// the final state: cancelled stays cancelled, a rotation halted by its
// error budget stays failed, otherwise completed_with_errors if any server
// failed, else succeeded; the history records the end once (historyLua).
// A part halted only because its group was has nothing left that the
// halt held back: it ends on its own outcomes (the group's event says the
// group's).
const finishLua = `
local finished = 0
if tonumber(redis.call('HGET', meta, 'pending')) <= 0 and tonumber(redis.call('HGET', meta, 'running')) <= 0
   and redis.call('HSETNX', meta, 'finished_at', ARGV[1]) == 1 then
  finished = 1
  local st = redis.call('HGET', meta, 'state')
  local why = redis.call('HGET', meta, 'reason') or ''
  if st == 'failed' and string.sub(why, 1, ` + groupHaltPrefixLen + `) == '` + groupHaltPrefix + `' then
    st = 'running'
    redis.call('HDEL', meta, 'reason')
  end
  if st ~= 'cancelled' and st ~= 'failed' then
    if tonumber(redis.call('HGET', meta, 'failed')) > 0 then st = 'completed_with_errors' else st = 'succeeded' end
    redis.call('HSET', meta, 'state', st)
  end
  local m = redis.call('HMGET', meta, 'succeeded', 'failed', 'skipped', 'cancelled', 'total')
  -- The detail is for people: completed_with_errors reads as three words.
  history('finished', '` + SystemActor + `', (string.gsub(st, '_', ' ')) .. ': ' .. m[1] .. ' succeeded, ' .. m[2] ..
    ' failed, ' .. m[3] .. ' skipped, ' .. m[4] .. ' cancelled of ' .. m[5])
end
`

// Resolve records resolutions of batch n, of wave w, and sets its next
// poll (nextPoll zero: no more polls; keepPoll: unchanged). Each server is
// resolved at most once per batch, however many ticks race.
func (s *Store) Resolve(ctx context.Context, id string, n, w int, rs []Resolution, nextPoll time.Time, keepPoll bool, now time.Time) (Resolved, error) {
	next := int64(0)
	switch {
	case keepPoll:
		next = -1
	case !nextPoll.IsZero():
		next = nextPoll.UnixMilli()
	}
	args := make([]any, 0, 3+7*len(rs))
	args = append(args, now.UnixMilli(), n, next)
	for _, r := range rs {
		page := pageField(w, r.Entry.page())
		if r.Entry.Attempt > 1 && page != "-1" {
			page = "r:" + page
		}
		switch {
		case r.Verify:
			args = append(args, r.ServerID, "verify", "", verifyScore(r.Entry), verifyMember(r, n, now), page, "")
		case r.Retry != nil:
			rec := record{Outcome: OutcomeCancelled, Attempts: r.Attempts, Batch: n, JobID: r.JobID, Code: r.Code, Message: r.Message, FinishedAt: now}
			args = append(args, r.ServerID, "retry", encodeEntry(*r.Retry), r.RetryAt.UnixMilli(), encodeRecord(rec), page, r.member)
		default:
			rec := record{Outcome: r.Outcome, Attempts: r.Attempts, Batch: n, JobID: r.JobID, Code: r.Code, Message: r.Message, FinishedAt: now}
			args = append(args, r.ServerID, string(r.Outcome), encodeRecord(rec), 0, r.member, page, r.member)
		}
	}
	keys := []string{s.batchKey(id, n), s.metaKey(id), s.recordsKey(id), s.pollsKey(id), s.retryKey(id), s.verifyKey(id), s.pagesKey(id), s.statsKey(id),
		s.historyKey(id)}
	v, err := resolveScript.Run(ctx, s.rdb, keys, args...).Int64Slice()
	if err != nil {
		return Resolved{}, fmt.Errorf("record outcomes of batch %d of %s: %w", n, id, err)
	}
	return Resolved{Recorded: int(v[0]), Complete: v[1] == 1, Finished: v[2] == 1, Advanced: int(v[3])}, nil
}

// unplaced is the verification score of a server whose place in the
// project's list is not known: read with ShowServer.
const unplaced = 1 << 50

func verifyScore(e Entry) int64 {
	if e.Pos < 0 {
		return unplaced
	}
	return int64(e.Pos)
}

// A verification entry: server, batch, keypair to find, attempt, job id,
// and when the job was seen to succeed (ms); for an unknown outcome also
// "u" and the old keypair (a retry needs it), and the code and message the
// API refused the server with, if it did.
func verifyMember(r Resolution, n int, now time.Time) string {
	f := []string{r.ServerID, strconv.Itoa(n), r.Entry.Keypair, strconv.Itoa(r.Attempts), r.JobID,
		strconv.FormatInt(now.UnixMilli(), 10)}
	if r.Unknown {
		f = append(f, "u", r.Entry.OldKeypair)
		if r.Code != "" {
			f = append(f, r.Code, oneLine(r.Message))
		}
	}
	return strings.Join(f, "\t")
}

// Pending is a server waiting in the verification set.
type Pending struct {
	ServerID string
	Batch    int
	Keypair  string
	Attempt  int
	JobID    string
	Since    time.Time // its job was seen to succeed (or its outcome to be unknown)
	// Pos is its place in the project's list when the plan read it, or
	// when verification learned it (-1: unknown).
	Pos int
	// Unknown: its job's outcome is not known (see Resolution.Unknown).
	Unknown    bool
	OldKeypair string // for Unknown: the keypair it had, kept for a retry
	// Code and Message, for Unknown, are how the API refused the server:
	// its outcome if it still exists.
	Code, Message string
	learned       bool // Pos was learned by verification, not planned
	member        string
}

// entry is the server as a retry batch would hold it.
func (p Pending) entry() Entry {
	return Entry{ServerID: p.ServerID, OldKeypair: p.OldKeypair, Keypair: p.Keypair, Attempt: p.Attempt, Pos: p.Pos}
}

// InFlight counts a page's targets of the current wave whose jobs have not
// ended: first attempts, and servers being retried.
type InFlight struct{ First, Retried int }

// Verifying returns up to limit servers waiting for verification, in the
// order of the project's server list (servers of unknown place last, with
// the place verification learned for them if it did), and how many
// targets of wave w on each page they are on (and the pages either side)
// are still in flight.
func (s *Store) Verifying(ctx context.Context, id string, w, limit int) ([]Pending, map[int]InFlight, error) {
	zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: s.verifyKey(id), Start: 0, Stop: int64(limit - 1)}).Result()
	if err != nil {
		return nil, nil, fmt.Errorf("read verification set of %s: %w", id, err)
	}
	out := make([]Pending, 0, len(zs))
	pages := map[int]bool{}
	var loose []string
	for _, z := range zs {
		m, _ := z.Member.(string)
		f := strings.Split(m, "\t")
		if len(f) != 6 && len(f) != 8 && len(f) != 10 {
			return nil, nil, fmt.Errorf("verification set of %s: corrupt entry %q", id, m)
		}
		b, _ := strconv.Atoi(f[1])
		a, _ := strconv.Atoi(f[3])
		ms, _ := strconv.ParseInt(f[5], 10, 64)
		p := Pending{ServerID: f[0], Batch: b, Keypair: f[2], Attempt: a, JobID: f[4], Since: time.UnixMilli(ms), Pos: -1, member: m}
		if len(f) >= 8 {
			p.Unknown, p.OldKeypair = f[6] == "u", f[7]
		}
		if len(f) == 10 {
			p.Code, p.Message = f[8], f[9]
		}
		if z.Score < unplaced {
			p.Pos = int(z.Score)
			// and the pages either side: a window may reach into them
			pg := p.Pos / 100
			pages[max(pg-1, 0)], pages[pg], pages[pg+1] = true, true, true
		} else {
			loose = append(loose, p.ServerID)
		}
		out = append(out, p)
	}
	if len(loose) > 0 {
		learned, err := s.learned(ctx, id, loose)
		if err != nil {
			return nil, nil, err
		}
		for i := range out {
			if pos, ok := learned[out[i].ServerID]; ok && out[i].Pos < 0 {
				out[i].Pos, out[i].learned = pos, true
			}
		}
	}
	inFlight := map[int]InFlight{}
	if len(pages) > 0 {
		fields := make([]string, 0, 2*len(pages))
		order := make([]int, 0, len(pages))
		for p := range pages {
			fields = append(fields, pageField(w, p), "r:"+pageField(w, p))
			order = append(order, p)
		}
		v, err := s.rdb.HMGet(ctx, s.pagesKey(id), fields...).Result()
		if err != nil {
			return nil, nil, fmt.Errorf("read page counts of %s: %w", id, err)
		}
		for i, p := range order {
			first, _ := v[2*i].(string)
			retried, _ := v[2*i+1].(string)
			var c InFlight
			c.First, _ = strconv.Atoi(first)
			c.Retried, _ = strconv.Atoi(retried)
			inFlight[p] = c
		}
	}
	return out, inFlight, nil
}

// Unplace moves a server whose place in the list has changed (its page
// did not hold it) to the end of the verification set, to be read on its
// own.
func (s *Store) Unplace(ctx context.Context, id string, p Pending) error {
	pipe := s.rdb.TxPipeline()
	pipe.ZAddXX(ctx, s.verifyKey(id), redis.Z{Score: unplaced, Member: p.member})
	if p.learned {
		pipe.HSet(ctx, s.whereKey(id), p.ServerID, -1)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return fmt.Errorf("verification of %s: unplace server %s: %w", id, p.ServerID, err)
	}
	return nil
}

// formScript forms a retry batch from the retry pool: up to size servers
// whose backoff has ended, and only when there are size of them unless
// forced. KEYS: meta, retry, the new batch, fresh. ARGV: now (ms), size,
// the batch number expected, force (1/0). Returns the servers taken, 0
// when it did not form one, -1 when another tick formed this number.
var formScript = redis.NewScript(`
if tonumber(redis.call('HGET', KEYS[1], 'batches') or '0') + 1 ~= tonumber(ARGV[3]) then return -1 end
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
if #due == 0 or (#due < tonumber(ARGV[2]) and ARGV[4] ~= '1') then return 0 end
redis.call('ZREM', KEYS[2], unpack(due))
redis.call('HSET', KEYS[3], 'servers', table.concat(due))
redis.call('HSET', KEYS[1], 'batches', ARGV[3])
redis.call('SADD', KEYS[4], ARGV[3])
return #due
`)

// Pool describes a rotation's retry pool.
type Pool struct {
	Size   int       // servers waiting
	Due    int       // of which their backoff has ended
	Oldest time.Time // the earliest end of a backoff (zero: empty pool)
	Next   time.Time // the earliest end of a backoff still running (zero: none)
}

// RetryPool describes the rotation's retry pool at now.
func (s *Store) RetryPool(ctx context.Context, id string, now time.Time) (Pool, error) {
	pipe := s.rdb.Pipeline()
	size := pipe.ZCard(ctx, s.retryKey(id))
	due := pipe.ZCount(ctx, s.retryKey(id), "-inf", strconv.FormatInt(now.UnixMilli(), 10))
	oldest := pipe.ZRangeWithScores(ctx, s.retryKey(id), 0, 0)
	next := pipe.ZRangeByScoreWithScores(ctx, s.retryKey(id), &redis.ZRangeBy{Min: "(" + strconv.FormatInt(now.UnixMilli(), 10), Max: "+inf", Count: 1})
	if _, err := pipe.Exec(ctx); err != nil {
		return Pool{}, fmt.Errorf("read retry pool of %s: %w", id, err)
	}
	p := Pool{Size: int(size.Val()), Due: int(due.Val())}
	if z := oldest.Val(); len(z) > 0 {
		p.Oldest = time.UnixMilli(int64(z[0].Score))
	}
	if z := next.Val(); len(z) > 0 {
		p.Next = time.UnixMilli(int64(z[0].Score))
	}
	return p, nil
}

// FormBatch forms retry batch n from up to size servers of the pool whose
// backoff has ended (fewer only when force), and reports how many it took:
// 0 when it formed none, -1 when batch n was formed by another tick.
func (s *Store) FormBatch(ctx context.Context, id string, n, size int, force bool, now time.Time) (int, error) {
	keys := []string{s.metaKey(id), s.retryKey(id), s.batchKey(id, n), s.freshKey(id)}
	k, err := formScript.Run(ctx, s.rdb, keys, now.UnixMilli(), size, n, flag(force)).Int()
	if err != nil {
		return 0, fmt.Errorf("form retry batch %d of %s: %w", n, id, err)
	}
	return k, nil
}

// Fresh returns the retry batches formed and not yet submitted.
func (s *Store) Fresh(ctx context.Context, id string) ([]int, error) {
	ms, err := s.rdb.SMembers(ctx, s.freshKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read new retry batches of %s: %w", id, err)
	}
	out := make([]int, 0, len(ms))
	for _, m := range ms {
		n, _ := strconv.Atoi(m)
		out = append(out, n)
	}
	return out, nil
}

// Polling counts a rotation's batches whose jobs are being polled.
func (s *Store) Polling(ctx context.Context, id string) (int, error) {
	n, err := s.rdb.ZCard(ctx, s.pollsKey(id)).Result()
	if err != nil {
		return 0, fmt.Errorf("read %s's batches being polled: %w", id, err)
	}
	return int(n), nil
}

// batchOf is the batch of a verification entry.
func batchOf(member string) int {
	_, rest, _ := strings.Cut(member, "\t")
	n, _ := strconv.Atoi(strings.SplitN(rest, "\t", 2)[0])
	return n
}
