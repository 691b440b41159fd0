package tasks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"
)

// HistoryKind is what happened to a rotation in one entry of its history.
type HistoryKind string

// History kinds. Each is written by the script that makes the change it
// names, so an entry is never lost nor written twice by a task run again.
const (
	HistoryCreated         HistoryKind = "created"          // the rotation was written; Actor started it
	HistoryKeypairImported HistoryKind = "keypair_imported" // --generate-keypair imported the keypair into KPS
	HistoryWaveStarted     HistoryKind = "wave_started"     // a wave's first chunks were enqueued
	HistoryPaused          HistoryKind = "paused"           // by an operator, after a wave, or waiting for its turn
	HistoryResumed         HistoryKind = "resumed"          // Detail names a new error budget
	HistoryHaltedBudget    HistoryKind = "halted_budget"    // the error budget was exceeded
	HistoryHalted          HistoryKind = "halted"           // the API refused the credentials, or the keypair is missing
	HistoryCancelled       HistoryKind = "cancelled"
	HistoryFinished        HistoryKind = "finished" // Detail: the final state, in words, and counts
	HistoryKeypairRetired  HistoryKind = "keypair_retired"
)

// SystemActor is the actor of what the workers do on their own: start a
// wave, pause after one, halt, finish.
const SystemActor = "cph-rekey"

// A rotation's history is capped at HistoryMax entries: the first
// HistoryHead (its creation, import and first waves) and the latest
// others. Entries left out between them show as a gap in Seq.
const (
	HistoryMax  = 100
	HistoryHead = 10
	// MaxActorLen bounds an actor's name, in bytes.
	MaxActorLen = 64
	// maxDetailLen bounds an entry's detail, in bytes.
	maxDetailLen = 400
)

// HistoryEntry is one entry of a rotation's history: when, what, who and
// the figures that go with it.
type HistoryEntry struct {
	// Seq numbers the rotation's entries from 1, in order; a gap shows
	// where entries were left out (HistoryMax).
	Seq    int64       `json:"seq"`
	At     time.Time   `json:"at"`
	Kind   HistoryKind `json:"kind"`
	Actor  string      `json:"actor,omitempty"`
	Detail string      `json:"detail,omitempty"`
	// Once, when set, keys an entry an idempotent step may write again
	// (AddHistory writes it the first time only). It is not stored.
	Once string `json:"-"`
}

// ValidateActor checks who an actor names (a --actor flag, a token's
// identity): printable text, at most MaxActorLen bytes. Empty is valid:
// nobody named.
func ValidateActor(actor string) error {
	if len(actor) > MaxActorLen {
		return fmt.Errorf("actor %q: at most %d bytes", actor, MaxActorLen)
	}
	if !utf8.ValidString(actor) {
		return fmt.Errorf("actor %q: not UTF-8 text", actor)
	}
	if strings.IndexFunc(actor, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return fmt.Errorf("actor %q: control or unprintable characters", actor)
	}
	return nil
}

// historyLua defines history(kind, actor, detail), which appends an entry
// to the history list hist, stamped hist_at (ms), numbered by the meta
// hash's hist_seq, and keeps the list to its cap: past it, the oldest
// entry after the first HistoryHead goes. An entry added after the
// rotation's keys were given their retention (Store.Expire) takes the
// record's. The script that includes it defines meta, hist and hist_at.
// Text is kept to one line of bounded length, as the records are.
var historyLua = `
local function history(kind, actor, detail)
  actor = string.sub(string.gsub(actor or '', '%c', ' '), 1, ` + strconv.Itoa(MaxActorLen) + `)
  detail = string.sub(string.gsub(detail or '', '%c', ' '), 1, ` + strconv.Itoa(maxDetailLen) + `)
  local seq = redis.call('HINCRBY', meta, 'hist_seq', 1)
  redis.call('RPUSH', hist, seq .. '\t' .. hist_at .. '\t' .. kind .. '\t' .. actor .. '\t' .. detail)
  if redis.call('LLEN', hist) > ` + strconv.Itoa(HistoryMax) + ` then
    redis.call('LREM', hist, 1, redis.call('LINDEX', hist, ` + strconv.Itoa(HistoryHead) + `))
  end
  local ttl = redis.call('PTTL', meta)
  if ttl > 0 then redis.call('PEXPIRE', hist, ttl) end
end
`

// historyKey holds the rotation's history (LIST, see historyLua).
func (s *Store) historyKey(id string) string { return s.prefix + "{" + id + "}:hist" }

// addHistoryScript adds an entry to an existing rotation's history; with
// a once key (ARGV[5]), only the first time. KEYS: meta, hist. ARGV: at
// (ms), kind, actor, detail, once. Returns 1 when added, 0 when the once
// key was seen, -1 when the rotation does not exist.
var addHistoryScript = redis.NewScript(`
local meta, hist, hist_at = KEYS[1], KEYS[2], ARGV[1]
` + historyLua + `
if redis.call('EXISTS', meta) == 0 then return -1 end
if ARGV[5] ~= '' and redis.call('HSETNX', meta, 'hist_once:' .. ARGV[5], '1') == 0 then return 0 end
history(ARGV[2], ARGV[3], ARGV[4])
return 1
`)

// AddHistory adds e to rotation id's history, stamped e.At (zero: now),
// for a step outside the store's own scripts (the retire of the old
// keypair). With e.Once set, an entry with the same key is added once
// however often the step runs. It reports whether the entry was added.
// The actor must pass ValidateActor.
func (s *Store) AddHistory(ctx context.Context, id string, e HistoryEntry) (bool, error) {
	if e.Kind == "" {
		return false, fmt.Errorf("history of %s: an entry needs a kind", id)
	}
	if err := ValidateActor(e.Actor); err != nil {
		return false, fmt.Errorf("history of %s: %w", id, err)
	}
	if e.At.IsZero() {
		e.At = time.Now()
	}
	n, err := addHistoryScript.Run(ctx, s.rdb, []string{s.metaKey(id), s.historyKey(id)},
		e.At.UnixMilli(), string(e.Kind), e.Actor, e.Detail, e.Once).Int()
	switch {
	case err != nil:
		return false, fmt.Errorf("add %s to the history of %s: %w", e.Kind, id, err)
	case n < 0:
		return false, fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	return n == 1, nil
}

// History reads rotation id's history, oldest first: ErrNotFound when
// the rotation does not exist. A rotation written before histories were
// kept has none.
func (s *Store) History(ctx context.Context, id string) ([]HistoryEntry, error) {
	pipe := s.rdb.Pipeline()
	exists := pipe.Exists(ctx, s.metaKey(id))
	lines := pipe.LRange(ctx, s.historyKey(id), 0, -1)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("read history of %s: %w", id, err)
	}
	if exists.Val() == 0 {
		return nil, fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	out := make([]HistoryEntry, 0, len(lines.Val()))
	for _, l := range lines.Val() {
		e, err := decodeHistory(l)
		if err != nil {
			return nil, fmt.Errorf("read history of %s: %w", id, err)
		}
		out = append(out, e)
	}
	return out, nil
}

func decodeHistory(s string) (HistoryEntry, error) {
	f := strings.SplitN(s, "\t", 5)
	if len(f) != 5 {
		return HistoryEntry{}, fmt.Errorf("corrupt history entry %q", s)
	}
	seq, err1 := strconv.ParseInt(f[0], 10, 64)
	at, err2 := strconv.ParseInt(f[1], 10, 64)
	if err1 != nil || err2 != nil {
		return HistoryEntry{}, fmt.Errorf("corrupt history entry %q", s)
	}
	// The script cuts text at a byte count, which may split a rune.
	return HistoryEntry{Seq: seq, At: time.UnixMilli(at).UTC(), Kind: HistoryKind(f[2]),
		Actor: strings.ToValidUTF8(f[3], ""), Detail: strings.ToValidUTF8(f[4], "")}, nil
}
