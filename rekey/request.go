package rekey

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/targets"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// Target is a server to rotate and, optionally, a keypair of its own, in
// its region and project.
type Target struct {
	ServerID string
	Keypair  string // "": the Request's Keypair
	// Region and ProjectID place the server; "" is the client's
	// Options.CPH Region and ProjectID (the workers' own, without one).
	// Targets in several places start a rotation of several parts, one a
	// (region, project), each with its endpoint, quota and error budget.
	Region    string
	ProjectID string
}

// TargetOptions say how ReadTargets reads a target list.
type TargetOptions struct {
	Format Format // "": FormatAuto
	// Region and ProjectID place the targets that name neither (--region
	// and HUAWEICLOUD_SDK_PROJECT_ID).
	Region, ProjectID string
	// Regions are the regions a target may name; nil: the regions the CPH
	// API is served in (CPH.KnownRegions adds those given an endpoint).
	Regions []string
}

// Format is the layout of a target list (docs/targets.md).
type Format string

// Target list formats.
const (
	FormatAuto  Format = "auto"  // detected from the first bytes: '[' is JSON, a server_id header is CSV, else lines
	FormatLines Format = "lines" // one server id a line, # comments
	FormatCSV   Format = "csv"   // a header naming server_id and optionally keypair_name
	FormatJSON  Format = "json"  // an array of ids or of {"server_id","keypair_name"} objects
)

// ParseFormat reads a format name ("auto", "lines", "csv", "json"; any
// case), as enqueue start's --format takes it.
func ParseFormat(s string) (Format, error) {
	f, err := targets.ParseFormat(s)
	if err != nil {
		return "", &InputError{Err: err}
	}
	return Format(f.String()), nil
}

// ParseTargets reads and validates a whole target list in format f (""
// is FormatAuto), streaming it. Bad input is an *InputError naming each
// problem's line or element (at most 20 kept); nothing is returned then.
// Any other error is a failure to read r.
func ParseTargets(r io.Reader, f Format) ([]Target, error) {
	return ReadTargets(r, TargetOptions{Format: f})
}

// ReadTargets reads a target list as ParseTargets does, with its region
// and project_id columns (or fields): a target that names no place is in
// o's; a region must be one of o.Regions, a project id 32 hex digits, and
// a server may be listed once in each (region, project).
func ReadTargets(r io.Reader, o TargetOptions) ([]Target, error) {
	f := o.Format
	if f == "" {
		f = FormatAuto
	}
	tf, err := targets.ParseFormat(string(f))
	if err != nil {
		return nil, &InputError{Err: err}
	}
	ts, err := targets.Read(r, targets.Options{Format: tf, Region: o.Region, ProjectID: o.ProjectID, Regions: o.Regions})
	if err != nil {
		var ie *targets.InputError
		if errors.As(err, &ie) {
			return nil, inputErrorOf(ie)
		}
		return nil, err
	}
	out := make([]Target, len(ts))
	for i, t := range ts {
		out[i] = Target{ServerID: t.ServerID, Keypair: t.KeypairName, Region: t.Region, ProjectID: t.ProjectID}
	}
	return out, nil
}

// Size is a number of servers, or a percentage of the servers a rotation
// submits (its targets not already on the keypair).
type Size struct {
	N       int
	Percent bool // N is a percentage, 0-100
}

// Servers is a Size of n servers.
func Servers(n int) Size { return Size{N: n} }

// Percent is a Size of p % of the servers to submit.
func Percent(p int) Size { return Size{N: p, Percent: true} }

// String writes s as ParseSize reads it: "12" or "10%".
func (s Size) String() string { return s.internal().String() }

func (s Size) internal() tasks.Size { return tasks.Size{N: s.N, Percent: s.Percent} }

// ParseSize reads "12" (servers) or "10%".
func ParseSize(s string) (Size, error) {
	v, err := tasks.ParseSize(s)
	if err != nil {
		return Size{}, &InputError{Err: err}
	}
	return Size{N: v.N, Percent: v.Percent}, nil
}

// ParseWaves reads a list of canary waves such as "1,10,10%,100%": each
// entry is that wave's own size, and what the list leaves over is one
// last wave. "" is one wave.
func ParseWaves(s string) ([]Size, error) {
	ws, err := tasks.ParseWaves(s)
	if err != nil {
		return nil, &InputError{Err: err}
	}
	var out []Size
	for _, w := range ws {
		out = append(out, Size{N: w.N, Percent: w.Percent})
	}
	return out, nil
}

// Defaults of a Request's zero values, the same as enqueue start's, and
// the largest chunk: one chunk's jobs fit one ListJobs page.
const (
	MaxChunkSize       = 100
	DefaultChunkSize   = 100
	DefaultMaxAttempts = 3
	DefaultRetention   = 30 * 24 * time.Hour
)

// DefaultMaxErrors is the error budget of a Request without one: 10 % of
// the servers to submit.
func DefaultMaxErrors() Size {
	return Size{N: tasks.DefaultMaxErrors.N, Percent: tasks.DefaultMaxErrors.Percent}
}

// Request is a rotation to start: every option of enqueue start. Its zero
// values are enqueue start's defaults.
type Request struct {
	// ID names the rotation. Empty: derived from the keypair, the options
	// and the sorted targets, so the same Request names the same rotation
	// and starting it again enqueues nothing twice.
	ID string
	// Keypair is the keypair every target must end on (required).
	Keypair string
	// Targets are the servers to rotate; Discover takes them from the
	// fleet instead. Exactly one of the two is set.
	Targets  []Target
	Discover *Discover
	// ChunkSize is the number of servers of one UpdateKeypair call, 1-100.
	// Zero: 100.
	ChunkSize int
	// MaxAttempts is how many times a server whose job failed transiently
	// is submitted, 1-20. Zero: 3.
	MaxAttempts int
	// NoSkipMatching does not read the fleet first (enqueue start
	// --skip-matching=false): servers already on the keypair are submitted
	// anyway, no old keypair is recorded (so the rotation cannot be rolled
	// back), and verification reads one server a call. The zero value
	// reads the fleet, which needs Options.CPH.
	NoSkipMatching bool
	// Waves are canary waves (see ParseWaves); nil: one wave.
	Waves []Size
	// PauseAfterWave pauses the rotation whenever a wave has ended, until
	// Resume.
	PauseAfterWave bool
	// MaxErrors is the error budget: servers that may fail for good; one
	// more halts the rotation. Nil: DefaultMaxErrors (10 %).
	MaxErrors *Size
	// NoVerify does not read each succeeded server's keypair back
	// (enqueue start --verify=false).
	NoVerify bool
	// Retention is how long the rotation's records, report and completion
	// event are kept after it ends. Zero: DefaultRetention (30 days).
	Retention time.Duration
	// RegionOrder orders the parts of a rotation across places: these
	// regions first, in this order (a canary region first), then the
	// others as they appear in Targets.
	RegionOrder []string
	// MaxConcurrentRegions is how many parts of a rotation across places
	// run at once, in RegionOrder; the others wait (paused, "waiting for
	// its turn") and start as parts finish or halt. Zero: all at once.
	MaxConcurrentRegions int
	// MaxErrorsTotal is the error budget of a rotation across places as a
	// whole (enqueue start --max-errors-total): servers that may fail for
	// good across all its parts, a percentage being of the servers they
	// submit; one more halts every part. MaxErrors stays each part's own.
	// Nil: none, only the parts' budgets. A rotation of one place has its
	// MaxErrors alone.
	MaxErrorsTotal *Size
	// OnRegionHalt is what the other parts of a rotation across places do
	// when one halts (past its budget, or refused by the API). Zero:
	// HaltAll, as CloudFormation StackSets stop an operation at a region
	// past its failure tolerance.
	OnRegionHalt HaltPolicy
	// SkipKeypairCheck does not ask KPS whether the keypairs exist in
	// every place (region, project) of the rotation before planning
	// (enqueue start --skip-keypair-check), for credentials without
	// KeypairReadAction. The zero value checks when the client
	// has Options.CPH (without it there is nothing to ask, and nothing is
	// checked); a missing keypair is then an *InputError holding a
	// *MissingKeypairError, and nothing is read or written.
	SkipKeypairCheck bool
	// Actor names who starts the rotation, the first entry of its
	// history (see HistoryEntry): a user name, a token's identity; "": the
	// context's (WithActor). At most 64 bytes of printable text.
	Actor string
	// KeypairImported lists the places ImportKeypair imported the
	// rotation's keypair into just before (its answer), for the history.
	KeypairImported []string
	// Progress, when set, is told how the reads of the fleet go (discovery,
	// then skip-matching) after each page, and once more, with Done set,
	// when the plan is complete: Start writes the rotation after that call,
	// never before. It is called from the goroutine that called Plan or
	// Start, and is not part of the rotation.
	Progress func(PlanProgress)
}

// HaltPolicy is what the other parts of a rotation across places do when
// one halts (enqueue start --on-region-halt).
type HaltPolicy string

// Halt policies.
const (
	// HaltAll halts every part with the one that halted (in-flight calls
	// end; waiting parts do not start) until the rotation is resumed or
	// cancelled: the default, as StackSets do.
	HaltAll HaltPolicy = HaltPolicy(tasks.HaltAll)
	// ContinueOthers lets the other parts finish, and a waiting part take
	// the halted one's place.
	ContinueOthers HaltPolicy = HaltPolicy(tasks.HaltAlone)
)

// ParseHaltPolicy reads "halt" or "continue" ("": HaltAll).
func ParseHaltPolicy(s string) (HaltPolicy, error) {
	p, err := tasks.ParseHaltPolicy(s)
	if err != nil {
		return "", &InputError{Err: fmt.Errorf("on region halt %w", err)}
	}
	return HaltPolicy(p), nil
}

// Steps of a plan's reads of the fleet (PlanProgress.Step).
const (
	StepDiscover = "discover" // discovery lists the servers to rotate
	StepRead     = "read"     // skip-matching reads the targets' current keypairs
)

// PlanProgress is how far a plan's reads of the fleet are: one
// ListCloudPhoneServers walk a step, paced by Options.ReadRate.
type PlanProgress struct {
	// Step is StepDiscover or StepRead; the figures below are the step's.
	Step string
	// Pages counts the pages read so far (re-reads and retries that were
	// answered included); TotalPages is what the whole list takes as far
	// as its latest count tells (it grows with the list, and equals Pages
	// once the step is done).
	Pages, TotalPages int
	// Listed counts the servers listed so far, each once.
	Listed int
	// Targets counts the servers to rotate (0 while discovering); Matched
	// counts those of them found so far (while discovering: the servers
	// listed, which all match).
	Targets, Matched int
	// Throttled counts the answers 429 and Retries the reads tried again
	// (throttled or failed transiently); neither fails the plan.
	Throttled, Retries int
	// Elapsed is the time since the step began.
	Elapsed time.Duration
	// Done is set on the last call: the plan is complete.
	Done bool
}

// Rate is the pages read a second so far in the step (0: none yet).
func (p PlanProgress) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.Pages) / p.Elapsed.Seconds()
}

// ETA is the time the step's pages left take at Rate (0: unknown or done).
func (p PlanProgress) ETA() time.Duration {
	r := p.Rate()
	if r <= 0 || p.Pages >= p.TotalPages {
		return 0
	}
	return time.Duration(float64(p.TotalPages-p.Pages) / r * float64(time.Second))
}

// listProgress turns a walk's progress into a PlanProgress of step.
func listProgress(step string, p cph.ListProgress, start time.Time) PlanProgress {
	return PlanProgress{Step: step, Pages: p.Pages, TotalPages: p.TotalPages, Listed: p.Servers,
		Throttled: p.Throttled, Retries: p.Retries, Elapsed: time.Since(start)}
}

// spec checks r and resolves its targets (discovering them in places when
// asked).
func (c *Client) spec(ctx context.Context, r Request, places []tasks.Place) (tasks.Spec, error) {
	if r.ID != "" {
		if err := tasks.ValidateRotationID(r.ID); err != nil {
			return tasks.Spec{}, &InputError{Err: err}
		}
	}
	s := tasks.Spec{ID: r.ID, Keypair: r.Keypair, ChunkSize: r.ChunkSize, MaxAttempts: r.MaxAttempts,
		SkipMatching: !r.NoSkipMatching, PauseAfterWave: r.PauseAfterWave, SkipVerify: r.NoVerify, Retention: r.Retention,
		Actor: r.Actor}
	for _, p := range r.KeypairImported {
		s.KeypairImported = append(s.KeypairImported, c.importedPlace(p))
	}
	if s.Actor == "" {
		a, err := actorOf(ctx)
		if err != nil {
			return s, err
		}
		s.Actor = a
	}
	if err := ValidateActor(s.Actor); err != nil {
		return s, err
	}
	if r.MaxConcurrentRegions < 0 {
		return s, badInput("max concurrent regions %d: want 0 (all) or more", r.MaxConcurrentRegions)
	}
	if _, err := ParseHaltPolicy(string(r.OnRegionHalt)); err != nil {
		return s, err
	}
	switch {
	case s.ChunkSize == 0:
		s.ChunkSize = DefaultChunkSize
	case s.ChunkSize < 0:
		return s, badInput("chunk size %d: want 1-%d", s.ChunkSize, tasks.MaxChunkSize)
	}
	switch {
	case s.MaxAttempts == 0:
		s.MaxAttempts = DefaultMaxAttempts
	case s.MaxAttempts < 0:
		return s, badInput("max attempts %d: want 1-20", s.MaxAttempts)
	}
	switch {
	case s.Retention == 0:
		s.Retention = DefaultRetention
	case s.Retention < 0:
		return s, badInput("retention %s: want a positive duration", s.Retention)
	}
	budget := DefaultMaxErrors()
	if r.MaxErrors != nil {
		budget = *r.MaxErrors
	}
	b := budget.internal()
	s.MaxErrors = &b
	for _, w := range r.Waves {
		s.Waves = append(s.Waves, w.internal())
	}
	if s.SkipMatching && c.api == nil {
		return s, badInput("skip-matching reads the fleet: give the client Options.CPH, or set Request.NoSkipMatching")
	}
	switch {
	case r.Discover != nil && len(r.Targets) > 0:
		return s, badInput("both Targets and Discover are set: take the targets from one")
	case r.Discover != nil:
		ts, err := c.discover(ctx, *r.Discover, places, r.Progress)
		if err != nil {
			return s, err
		}
		s.Targets = ts
	default:
		first := make(map[string]int, len(r.Targets))
		for i, t := range r.Targets {
			place := c.placeOf(t)
			key := place.Region + "/" + place.ProjectID + "/" + t.ServerID
			if j, dup := first[key]; dup {
				return s, &InputError{Element: i + 1, Err: fmt.Errorf("duplicate server id %q (first at element %d)", t.ServerID, j)}
			}
			first[key] = i + 1
			if err := targets.ValidateServerID(t.ServerID); err != nil {
				return s, &InputError{Element: i + 1, Err: err}
			}
			if t.Keypair != "" {
				if err := targets.ValidateKeypairName(t.Keypair); err != nil {
					return s, &InputError{Element: i + 1, Err: err}
				}
			}
			if t.ProjectID != "" {
				if err := targets.ValidateProjectID(t.ProjectID); err != nil {
					return s, &InputError{Element: i + 1, Err: err}
				}
			}
			s.Targets = append(s.Targets, tasks.Target{ServerID: t.ServerID, Keypair: t.Keypair, Place: place})
		}
	}
	// The order names regions as the targets do: the client's own is the
	// default place's, "".
	for _, region := range r.RegionOrder {
		p := c.placeOf(Target{Region: region})
		if !slices.ContainsFunc(s.Targets, func(t tasks.Target) bool { return t.Place.Region == p.Region }) {
			return s, badInput("region %q of the region order has no targets", region)
		}
		s.RegionOrder = append(s.RegionOrder, p.Region)
	}
	return s, nil
}
