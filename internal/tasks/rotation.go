package tasks

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/movinglist"
)

// State is the life-cycle state of a rotation.
type State string

// Rotation states. A rotation is Running from the moment it is created; it
// ends Succeeded when every server succeeded or was skipped,
// CompletedWithErrors when some servers failed within the error budget,
// Failed when the error budget halted it, and Cancelled when an operator
// cancelled it. A rotation that is Failed before it has finished was halted
// by its error budget, or because the API refused its credentials (a 401
// or 403; Reason says which): no new batch is submitted until an operator
// resumes or cancels it.
const (
	StateRunning             State = "running"
	StatePaused              State = "paused"
	StateCancelled           State = "cancelled"
	StateSucceeded           State = "succeeded"
	StateCompletedWithErrors State = "completed_with_errors"
	StateFailed              State = "failed"
)

// Outcome is a server's terminal outcome in a rotation.
type Outcome string

// Outcomes. Pending and Running are not terminal; they appear in reports
// of rotations still in progress.
const (
	OutcomePending   Outcome = "pending"
	OutcomeRunning   Outcome = "running"
	OutcomeSucceeded Outcome = "succeeded"
	OutcomeFailed    Outcome = "failed"
	OutcomeSkipped   Outcome = "skipped"
	OutcomeCancelled Outcome = "cancelled"
)

// Counts are a rotation's counters. Pending, Running, Succeeded, Failed,
// Skipped and Cancelled partition the servers (they add up to Total);
// Submitted and Retried count server submissions, which retries repeat.
// Pending includes servers waiting in the retry pool.
type Counts struct {
	Total     int64 `json:"total"`
	Pending   int64 `json:"pending"`
	Running   int64 `json:"running"`
	Succeeded int64 `json:"succeeded"`
	Failed    int64 `json:"failed"`
	Skipped   int64 `json:"skipped"`
	Cancelled int64 `json:"cancelled"`
	// Verifying counts the Running servers whose job succeeded and whose
	// keypair is still to be read back.
	Verifying int64 `json:"verifying"`
	Submitted int64 `json:"submitted"`
	Retried   int64 `json:"retried"`
	// Resubmitted counts batch submissions repeated because an earlier
	// call's outcome was unknown (a worker died, or the connection dropped,
	// between the API call and the checkpoint).
	Resubmitted int64 `json:"resubmitted"`
}

// Done is the number of servers in a terminal outcome.
func (c Counts) Done() int64 { return c.Succeeded + c.Failed + c.Skipped + c.Cancelled }

// Rotation is a rotation's record: what it was asked to do and where it is.
type Rotation struct {
	ID string `json:"id"`
	// Schema is the SchemaVersion of the release that wrote the record
	// (1 for records that predate versions).
	Schema  int    `json:"schema"`
	Keypair string `json:"keypair"`
	// Region and ProjectID are the rotation's place (see Place); empty:
	// the worker's own, as for every rotation written before places.
	Region    string `json:"region,omitempty"`
	ProjectID string `json:"project_id,omitempty"`
	// Group is the rotation across places this one is the part of one
	// place of ("": none).
	Group     string `json:"group,omitempty"`
	ChunkSize int    `json:"chunk_size"`
	// Chunks are the first-attempt batches, 1 to Chunks, planned at start;
	// Batches counts them and the retry batches formed since.
	Chunks      int    `json:"chunks"`
	Batches     int    `json:"batches"`
	MaxAttempts int    `json:"max_attempts"`
	Fingerprint string `json:"fingerprint"`
	// Waves split the chunks into canary waves, in order; a rotation
	// without waves given has one wave of every chunk.
	Waves []Wave `json:"waves"`
	// Wave is the wave being submitted (1-based); later waves wait.
	Wave int `json:"wave"`
	// WaveOpen counts the servers of the current wave not terminal yet;
	// the next wave starts when it reaches 0.
	WaveOpen int `json:"wave_open"`
	// MaxErrors is the error budget: one more permanently failed server
	// halts the rotation.
	MaxErrors int `json:"max_errors"`
	// Verify reads every succeeded server's keypair back.
	Verify bool `json:"verify"`
	// Positions: the plan read the project's server list, and each
	// server's place in it lets verification read whole pages.
	Positions bool `json:"positions"`
	// PauseAfterWave pauses the rotation whenever a wave has finished.
	PauseAfterWave bool `json:"pause_after_wave"`
	// Retention is how long the records are kept after the rotation ends
	// (zero: the worker's default).
	Retention  time.Duration `json:"retention"`
	State      State         `json:"state"`
	Reason     string        `json:"reason,omitempty"` // why the rotation is halted or paused
	CreatedAt  time.Time     `json:"created_at"`
	FinishedAt time.Time     `json:"finished_at,omitzero"`
	Counts     Counts        `json:"counts"`
	// Retired is the outcome of the rotation's last retire in its place
	// (nil: none); RetireDue is when a scheduled retire is due, and
	// RetireError why the last scheduled run failed.
	Retired     *RetiredPlace `json:"retired,omitempty"`
	RetireDue   time.Time     `json:"retire_due,omitzero"`
	RetireError string        `json:"retire_error,omitempty"`
	// waveQueued is the last wave whose chunks began to be enqueued,
	// queued the last chunk enqueued, and sent how many chunks' first
	// submit has ended (see topUp).
	waveQueued, queued, sent int
	// What verification knows of the project's list (see store_verify.go):
	// its count when the plan read it, how it has moved since, how many
	// targets the plan did not place, and the sweep that looks for them.
	listCount              int
	drift                  movinglist.Drift
	unplaced               int
	sweepNext              int
	sweepDone, showRefused bool
	// cancelClosed: a cancel closed every batch not submitted; a cancelled
	// rotation without it had its cancel cut short.
	cancelClosed bool
	// jobLatency is how long the rotation's jobs have been seen to take
	// (Store.ObserveJobLatency; zero until a poll saw one end).
	jobLatency time.Duration
	// actor started the rotation, and imported says where its keypair was
	// imported first (Spec): the first entries of its history, written
	// with the record and not part of it.
	actor, imported string
}

// createdDetail is the detail of the history's created entry: what the
// plan holds.
func (r *Rotation) createdDetail(submit int64, skipped int) string {
	d := fmt.Sprintf("%d servers to keypair %s in %d chunks", submit, r.Keypair, r.Chunks)
	if skipped > 0 {
		d += fmt.Sprintf(", %d already on it (skipped)", skipped)
	}
	if len(r.Waves) > 1 {
		d += fmt.Sprintf(", %d waves", len(r.Waves))
	}
	if r.MaxErrors >= 0 {
		d += fmt.Sprintf("; max errors %d", r.MaxErrors)
	}
	if p := r.Place(); !p.IsZero() {
		d += "; in " + p.String()
	}
	return d
}

// Finished reports whether every server of the rotation is terminal.
func (r *Rotation) Finished() bool { return !r.FinishedAt.IsZero() }

// Halted reports whether the error budget stopped the rotation: it has
// not finished, and waits for resume (with a larger budget) or cancel.
func (r *Rotation) Halted() bool { return r.State == StateFailed && !r.Finished() }

// WaveOf returns the wave chunk belongs to (1-based).
func (r *Rotation) WaveOf(chunk int) int {
	for i, w := range r.Waves {
		if chunk <= w.LastChunk {
			return i + 1
		}
	}
	return len(r.Waves)
}

// waveOfBatch returns the wave batch n belongs to: a chunk's own, and the
// wave being submitted for a retry batch (a wave ends only when all its
// servers are terminal, so retries never outlive it).
func (r *Rotation) waveOfBatch(n int) int {
	if n <= r.Chunks {
		return r.WaveOf(n)
	}
	return r.Wave
}

// chunksOf returns the first and last chunk of wave w (1-based).
func (r *Rotation) chunksOf(w int) (first, last int) {
	if w < 1 || w > len(r.Waves) {
		return 1, 0
	}
	if w > 1 {
		first = r.Waves[w-2].LastChunk + 1
	} else {
		first = 1
	}
	return first, r.Waves[w-1].LastChunk
}

// Wave is one canary wave of a rotation: whole chunks, up to LastChunk.
// Retry batches belong to the wave being submitted (a wave ends only when
// all its servers are terminal).
type Wave struct {
	LastChunk int `json:"last_chunk"`
	Servers   int `json:"servers"`
}

// Size is a number of servers, or a percentage of a rotation's servers to
// submit (the targets not skipped at planning time).
type Size struct {
	N       int
	Percent bool // N is a percentage, 0-100
}

// MaxWaves bounds the --waves list.
const MaxWaves = 100

// DefaultMaxErrors is the error budget when none is given: like Ansible's
// max_fail_percentage, stricter than AWS Config's 50 %, and unlike SSM's
// default of 0 it lets a few bad servers of a large fleet through while a
// systematic failure (a wrong keypair name) halts the rotation early.
var DefaultMaxErrors = Size{N: 10, Percent: true}

// ParseSize parses "12" (servers) or "10%" (of the rotation).
func ParseSize(s string) (Size, error) {
	num, pct := strings.CutSuffix(strings.TrimSpace(s), "%")
	n, err := strconv.Atoi(num)
	switch {
	case err != nil || n < 0:
		return Size{}, fmt.Errorf("%q: want a number of servers (like 5) or a percentage (like 10%%)", s)
	case pct && n > 100:
		return Size{}, fmt.Errorf("%q: a percentage is at most 100%%", s)
	}
	return Size{N: n, Percent: pct}, nil
}

func (s Size) String() string {
	if s.Percent {
		return strconv.Itoa(s.N) + "%"
	}
	return strconv.Itoa(s.N)
}

// Floor is the size in servers of a rotation of total servers, a
// percentage rounded down: 10% of 55 is 5, so the 6th failure trips the
// budget (AWS SSM's MaxErrors rounding).
func (s Size) Floor(total int) int {
	if s.Percent {
		return total * s.N / 100
	}
	return s.N
}

// ParseWaves parses a --waves list such as "1,10,10%,100%". Each entry is
// that wave's own size; a percentage is of the servers to submit, rounded
// up. A wave never takes more than what is left, and whatever the list
// does not cover forms one last wave, so "100%" (or nothing) means "the
// rest". Sizes must be at least 1.
func ParseWaves(s string) ([]Size, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > MaxWaves {
		return nil, fmt.Errorf("waves %q: at most %d waves", s, MaxWaves)
	}
	out := make([]Size, len(parts))
	for i, p := range parts {
		sz, err := ParseSize(p)
		if err != nil {
			return nil, fmt.Errorf("wave %d: %w", i+1, err)
		}
		if sz.N < 1 {
			return nil, fmt.Errorf("wave %d: %q: a wave has at least 1 server", i+1, p)
		}
		out[i] = sz
	}
	return out, nil
}

// waveServers splits total servers into the waves' sizes.
func waveServers(waves []Size, total int) []int {
	var out []int
	left := total
	for _, w := range waves {
		if left == 0 {
			break
		}
		n := w.N
		if w.Percent {
			n = max(1, (total*w.N+99)/100)
		}
		n = min(n, left)
		out = append(out, n)
		left -= n
	}
	if left > 0 {
		out = append(out, left)
	}
	return out
}

// Summary is the payload of a rotation:finished task: the completion
// event of the public contract (docs/contracts.md, package rekey's Event).
type Summary struct {
	// Version is the event's contract version, EventVersion.
	Version    int       `json:"version"`
	Rotation   string    `json:"rotation"`
	State      State     `json:"state"`
	Reason     string    `json:"reason,omitempty"`
	Keypair    string    `json:"keypair"`
	Counts     Counts    `json:"counts"`
	CreatedAt  time.Time `json:"created_at"`
	FinishedAt time.Time `json:"finished_at"`
	// Region, ProjectID and Group: the rotation's place, and the rotation
	// across places it is a part of (each part sends its own event).
	Region    string `json:"region,omitempty"`
	ProjectID string `json:"project_id,omitempty"`
	Group     string `json:"group,omitempty"`
	// History is the rotation's history up to its end (HistoryEntry),
	// oldest first; absent from the events of releases before it was kept.
	History []HistoryEntry `json:"history,omitempty"`
	// Parts: the event of a rotation across places, sent once when its
	// last part has finished, sums them and names each (GroupSummary).
	Parts []PartSummary `json:"parts,omitempty"`
}

// PartSummary is a part in its group's completion event.
type PartSummary struct {
	Rotation  string `json:"rotation"`
	Region    string `json:"region,omitempty"`
	ProjectID string `json:"project_id,omitempty"`
	State     State  `json:"state"`
	Counts    Counts `json:"counts"`
}

// Versions of the JSON contracts tools rely on (docs/contracts.md). A
// version changes only when a field is removed or changes meaning; fields
// are added without one.
const (
	EventVersion     = 1 // Summary, the rotation:finished payload
	ReportRowVersion = 1 // ReportRow in JSON reports
)

var rotationIDPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// ValidateRotationID checks a rotation id. Ids become part of Redis hash
// tags and asynq task IDs, so braces, colons and spaces are refused.
func ValidateRotationID(id string) error {
	if !rotationIDPattern.MatchString(id) {
		return fmt.Errorf("rotation id %q: want 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit", id)
	}
	return nil
}

// Entry is one server of a batch: its id, the keypair it had when the
// rotation was planned (if known), the keypair it must end on, the attempt
// this batch is for it, and its position in the project's server list when
// the plan read it (-1: not read, or not listed).
type Entry struct {
	ServerID   string
	OldKeypair string
	Keypair    string
	Attempt    int
	Pos        int
}

// page is the ListCloudPhoneServers page (of 100) the plan saw the server
// on, or -1.
func (e Entry) page() int {
	if e.Pos < 0 {
		return -1
	}
	return e.Pos / cph.MaxServersPageSize
}

// pageField names a page's count of targets in flight in wave w: a wave's
// servers are verified without waiting for the next wave's.
func pageField(w, page int) string {
	if page < 0 {
		return "-1"
	}
	return strconv.Itoa(w) + ":" + strconv.Itoa(page)
}

// encodeEntries packs entries as tab-separated lines: compact in Redis, and
// safe because server ids and keypair names never contain tabs or newlines
// (internal/targets rejects them).
func encodeEntries(es []Entry) string {
	var b strings.Builder
	for _, e := range es {
		b.WriteString(encodeEntry(e))
	}
	return b.String()
}

func encodeEntry(e Entry) string {
	return e.ServerID + "\t" + e.OldKeypair + "\t" + e.Keypair + "\t" + strconv.Itoa(e.Attempt) + "\t" + strconv.Itoa(e.Pos) + "\n"
}

func decodeEntries(s string) ([]Entry, error) {
	var es []Entry
	for line := range strings.Lines(s) {
		f := strings.Split(strings.TrimSuffix(line, "\n"), "\t")
		if len(f) != 5 {
			return nil, fmt.Errorf("corrupt batch entry %q", line)
		}
		a, err1 := strconv.Atoi(f[3])
		pos, err2 := strconv.Atoi(f[4])
		if err1 != nil || err2 != nil {
			return nil, fmt.Errorf("corrupt batch entry %q", line)
		}
		es = append(es, Entry{ServerID: f[0], OldKeypair: f[1], Keypair: f[2], Attempt: a, Pos: pos})
	}
	return es, nil
}
