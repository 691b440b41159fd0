package tasks

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/kps"
)

// The retire closes a rotation's key lifecycle (create → rotate → verify →
// retire): it deletes the rotation's old keypairs from the KPS of each
// (region, project) it touched, but only where the project's server list,
// read back whole, shows no server still on them.

// TypeRetire is the type of a scheduled retire's task.
const TypeRetire = "rotation:retire"

// RetireTaskID is the ID of rotation's scheduled retire: one a rotation,
// so scheduling it twice enqueues it once.
func RetireTaskID(rotation string) string { return "retire-" + rotation }

// RetirePayload is the payload of a scheduled retire.
type RetirePayload struct {
	Rotation        string `json:"rotation"`
	AllowIncomplete bool   `json:"allow_incomplete,omitempty"`
	// Actor is who scheduled it, for the rotation's history.
	Actor string `json:"actor,omitempty"`
	V     int    `json:"v,omitempty"` // SchemaVersion of the release that enqueued it (0: 1)
}

// RetireTimeout bounds one run of a scheduled retire: it reads each
// project's whole server list (10,000 pages for a million servers, at the
// read rate), which takes far longer than a pipeline task may.
const RetireTimeout = time.Hour

// DeleteAction is the IAM action DeleteKeypair needs.
const DeleteAction = "kps:SSHKeyPair:delete"

// retireSample is how many of the servers still on a kept keypair an
// outcome names.
const retireSample = 5

// ErrRetireRefused is wrapped by Retire's refusal of a rotation that has
// not finished, or did not succeed and was not allowed to.
var ErrRetireRefused = errors.New("retire refused")

// KeypairDeleter deletes keypairs from one project's KPS (kps.Client
// does). Deleting a keypair that does not exist is an error for which
// kps.IsNotFound is true.
type KeypairDeleter interface {
	Delete(ctx context.Context, name string) error
}

// RetireAt is what a retire needs in one place.
type RetireAt struct {
	// Fleet reads the project's whole server list.
	Fleet ServerLister
	// Keypairs is the project's KPS.
	Keypairs KeypairDeleter
	// Region and ProjectID name the place in the outcome: the caller's
	// own where the rotation's place leaves them empty.
	Region, ProjectID string
}

// RetirePlaces gives what a retire needs in a place.
type RetirePlaces func(Place) (*RetireAt, error)

// RetireOptions tune Retire.
type RetireOptions struct {
	// DryRun reads and reports, and deletes and records nothing.
	DryRun bool
	// AllowIncomplete retires the old keypairs of a rotation that finished
	// other than succeeded (with errors, failed or cancelled). The servers
	// it left on an old keypair keep that keypair anyway: they are in the
	// list read back.
	AllowIncomplete bool
	// Actor is who retires, for the rotation's history ("": unknown; a
	// scheduled retire run by the workers is SystemActor's).
	Actor string
}

// Retirement is what a retire did (or, in a dry run, would do), place by
// place.
type Retirement struct {
	Rotation string          `json:"rotation"`
	DryRun   bool            `json:"dry_run"`
	At       time.Time       `json:"at"`
	Places   []*RetiredPlace `json:"places"`
}

// RetiredPlace is a retire's outcome in one (region, project): one part of
// a rotation across places, or the whole of a rotation in one place.
type RetiredPlace struct {
	// Rotation is the rotation (the part) in the place.
	Rotation  string    `json:"rotation"`
	Region    string    `json:"region"`
	ProjectID string    `json:"project_id"`
	At        time.Time `json:"at"`
	// Deleted are the old keypairs deleted from the project's KPS (in a
	// dry run: to be deleted).
	Deleted []DeletedKeypair `json:"deleted"`
	// Kept are the old keypairs left in place, and why.
	Kept []KeptKeypair `json:"kept"`
	// Unrecorded counts the rotation's servers whose old keypair was not
	// recorded (started with --skip-matching=false): their old keypairs
	// are not known, so not retired.
	Unrecorded int `json:"unrecorded,omitempty"`
}

// DeletedKeypair is an old keypair a retire deleted.
type DeletedKeypair struct {
	Keypair string `json:"keypair"`
	// AlreadyGone: KPS no longer held it, and no earlier retire of the
	// rotation had deleted it (a retire cut short before it stored its
	// outcome, or a deletion by hand).
	AlreadyGone bool `json:"already_gone,omitempty"`
}

// Why a keypair was kept.
const (
	KeptInUse   = "in_use"  // servers of the project are still on it
	KeptTarget  = "target"  // the rotation puts servers on it
	KeptRefused = "refused" // KPS refused to delete it (Message says why)
)

// KeptKeypair is an old keypair a retire left in KPS.
type KeptKeypair struct {
	Keypair string `json:"keypair"`
	Reason  string `json:"reason"` // KeptInUse or KeptTarget
	// Servers counts the project's servers on it when the list was read;
	// Sample names the first few.
	Servers int      `json:"servers"`
	Sample  []string `json:"sample,omitempty"`
	// Message is KPS's answer to a refused delete.
	Message string `json:"message,omitempty"`
}

// String says why k was kept, e.g. "3 servers still use it: s-1, s-2,
// s-3".
func (k KeptKeypair) String() string {
	switch k.Reason {
	case KeptTarget:
		return "the rotation puts servers on it"
	case KeptRefused:
		return "KPS refused to delete it: " + k.Message
	}
	s := fmt.Sprintf("%d servers still use it: %s", k.Servers, strings.Join(k.Sample, ", "))
	if k.Servers == 1 {
		s = "1 server still uses it: " + k.Sample[0]
	}
	if k.Servers > len(k.Sample) {
		s += fmt.Sprintf(" (first %d shown)", len(k.Sample))
	}
	return s
}

// deleted reports whether the retire that p is the outcome of deleted
// keypair k itself (p may be nil: no retire).
func (p *RetiredPlace) deleted(k string) bool {
	if p == nil {
		return false
	}
	return slices.ContainsFunc(p.Deleted, func(d DeletedKeypair) bool { return d.Keypair == k && !d.AlreadyGone })
}

// DeletedNames lists the keypairs a retire deleted, as "kp-old in
// region/project", for a refusal to roll back.
func (p *RetiredPlace) DeletedNames() []string {
	var out []string
	for _, d := range p.Deleted {
		out = append(out, d.Keypair+" in "+p.Region+"/"+p.ProjectID)
	}
	return out
}

// retireCandidates are a part's old keypairs, as its report recorded them.
type retireCandidates struct {
	rot        *Rotation
	old        []string // sorted
	unrecorded int
}

// Retire deletes rotation id's old keypairs (each server's keypair before
// the rotation, from its report) from the KPS of every place the rotation
// is in, where the place's server list, read back whole, shows no server
// on them; the rotation's target keypairs are never deleted. The id is a
// rotation in one place or a rotation across places (its parts). A keypair
// KPS no longer holds counts as deleted, so a retire cut short is finished
// by running it again. Unless opts.DryRun, each place's outcome is stored
// with its rotation (Rotation.Retired) as soon as its deletes are done.
//
// A rotation that has not finished, or (without opts.AllowIncomplete)
// that did not succeed, is refused with an error wrapping
// ErrRetireRefused, before anything is read from the API.
func Retire(ctx context.Context, store *Store, places RetirePlaces, id string, opts RetireOptions, now time.Time) (*Retirement, error) {
	rots, err := retirable(ctx, store, id, opts)
	if err != nil {
		return nil, err
	}
	targets := map[string]bool{}
	parts := make([]retireCandidates, len(rots))
	for i, rot := range rots {
		old := map[string]bool{}
		parts[i].rot = rot
		err := store.Report(ctx, rot.ID, func(row ReportRow) error {
			targets[row.NewKeypair] = true
			switch {
			case row.OldKeypair == "":
				parts[i].unrecorded++
			case row.OldKeypair != row.NewKeypair:
				old[row.OldKeypair] = true
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("retire %s: read the report of %s: %w", id, rot.ID, err)
		}
		for k := range old {
			parts[i].old = append(parts[i].old, k)
		}
		slices.Sort(parts[i].old)
	}
	now = now.UTC().Truncate(time.Millisecond)
	out := &Retirement{Rotation: id, DryRun: opts.DryRun, At: now}
	for _, part := range parts {
		at, err := places(part.rot.Place())
		if err != nil {
			return out, fmt.Errorf("retire %s in %s: %w", part.rot.ID, part.rot.Place(), err)
		}
		rp, err := retirePlace(ctx, at, part, targets, opts.DryRun, now)
		if err != nil {
			return out, fmt.Errorf("retire %s in %s/%s: %w", part.rot.ID, at.Region, at.ProjectID, err)
		}
		if !opts.DryRun {
			if err := store.SetRetired(ctx, part.rot.ID, rp); err != nil {
				return out, err
			}
			if err := recordRetired(ctx, store, rp, opts.Actor); err != nil {
				return out, err
			}
		}
		out.Places = append(out.Places, rp)
	}
	return out, nil
}

// recordRetired adds a retire's outcome in one place to its rotation's
// history, once per set of keypairs deleted: a retire run again that
// deletes nothing new adds nothing.
func recordRetired(ctx context.Context, store *Store, rp *RetiredPlace, actor string) error {
	var deleted, kept []string
	for _, d := range rp.Deleted {
		deleted = append(deleted, d.Keypair)
	}
	for _, k := range rp.Kept {
		kept = append(kept, k.Keypair+" ("+k.String()+")")
	}
	detail := "deleted " + cmp.Or(strings.Join(deleted, ", "), "none")
	if len(kept) > 0 {
		detail += "; kept " + strings.Join(kept, "; ")
	}
	_, err := store.AddHistory(ctx, rp.Rotation, HistoryEntry{At: rp.At, Kind: HistoryKeypairRetired, Actor: actor,
		Detail: detail, Once: "retire:" + strings.Join(deleted, ",")})
	return err
}

// retirable reads the rotations id names (itself, or a group's parts) and
// refuses them unless every one has finished and, without
// opts.AllowIncomplete, succeeded.
func retirable(ctx context.Context, store *Store, id string, opts RetireOptions) ([]*Rotation, error) {
	ids := []string{id}
	if _, err := store.Rotation(ctx, id); errors.Is(err, ErrNotFound) {
		g, gerr := store.Group(ctx, id)
		if gerr != nil {
			return nil, err
		}
		ids = g.Parts
	}
	var rots []*Rotation
	var running, unsuccessful []string
	for _, pid := range ids {
		rot, err := store.Rotation(ctx, pid)
		if err != nil {
			return nil, err
		}
		switch {
		case !rot.Finished():
			running = append(running, fmt.Sprintf("%s is %s", pid, rot.State))
		case rot.State != StateSucceeded:
			unsuccessful = append(unsuccessful, fmt.Sprintf("%s ended %s (%d failed, %d cancelled)", pid, rot.State, rot.Counts.Failed, rot.Counts.Cancelled))
		}
		rots = append(rots, rot)
	}
	if len(running) > 0 {
		return nil, fmt.Errorf("retire %s: %s and has not finished: its servers may still move off the old keypairs; retire it once it has ended: %w",
			id, strings.Join(running, ", "), ErrRetireRefused)
	}
	if len(unsuccessful) > 0 && !opts.AllowIncomplete {
		return nil, fmt.Errorf("retire %s: %s: not every server is on the new keypair, and a rollback needs the old ones; "+
			"retire anyway with --allow-incomplete (servers still on an old keypair keep it): %w",
			id, strings.Join(unsuccessful, ", "), ErrRetireRefused)
	}
	return rots, nil
}

// retirePlace retires part's old keypairs in one place: it reads the
// place's whole server list once, counting the servers on each old
// keypair, then deletes those no server is on.
func retirePlace(ctx context.Context, at *RetireAt, part retireCandidates, targets map[string]bool, dryRun bool, now time.Time) (*RetiredPlace, error) {
	rp := &RetiredPlace{Rotation: part.rot.ID, Region: at.Region, ProjectID: at.ProjectID, At: now,
		Deleted: []DeletedKeypair{}, Kept: []KeptKeypair{}, Unrecorded: part.unrecorded}
	users := map[string]*KeptKeypair{}
	for _, k := range part.old {
		if targets[k] {
			rp.Kept = append(rp.Kept, KeptKeypair{Keypair: k, Reason: KeptTarget})
			continue
		}
		users[k] = &KeptKeypair{Keypair: k, Reason: KeptInUse}
	}
	if len(users) == 0 {
		return rp, nil
	}
	err := at.Fleet.ListServers(ctx, cph.ServerFilter{}, func(page []cph.Server) error {
		for _, s := range page {
			if u := users[s.KeypairName]; u != nil {
				u.Servers++
				if len(u.Sample) < retireSample {
					u.Sample = append(u.Sample, s.ServerID)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read the server list back: %w", err)
	}
	for _, k := range part.old {
		u := users[k]
		switch {
		case u == nil:
		case u.Servers > 0:
			rp.Kept = append(rp.Kept, *u)
		case dryRun:
			rp.Deleted = append(rp.Deleted, DeletedKeypair{Keypair: k})
		default:
			err := at.Keypairs.Delete(ctx, k)
			switch {
			case err == nil:
				rp.Deleted = append(rp.Deleted, DeletedKeypair{Keypair: k})
			case kps.IsNotFound(err):
				// Gone since an earlier retire of this rotation deleted it:
				// the record keeps saying that retire deleted it.
				rp.Deleted = append(rp.Deleted, DeletedKeypair{Keypair: k, AlreadyGone: !part.rot.Retired.deleted(k)})
			case kps.IsDenied(err):
				return nil, fmt.Errorf("delete keypair %s: %w (the credentials' IAM policy needs %s)", k, err, DeleteAction)
			case cph.KindOf(err) == cph.KindPermanent && !wrongEndpoint(err):
				// KPS serves ECS too, whose servers this list does not
				// show: a keypair it will not delete (one bound to an ECS
				// server, say) is kept, and the others are retired.
				rp.Kept = append(rp.Kept, KeptKeypair{Keypair: k, Reason: KeptRefused, Message: err.Error()})
			default:
				return nil, fmt.Errorf("delete keypair %s: %w", k, err)
			}
		}
	}
	slices.SortFunc(rp.Kept, func(a, b KeptKeypair) int { return strings.Compare(a.Keypair, b.Keypair) })
	return rp, nil
}

// wrongEndpoint reports whether err is the gateway's answer that the API
// does not exist there: every delete would fail alike.
func wrongEndpoint(err error) bool {
	var ce *cph.Error
	return errors.As(err, &ce) && ce.Code == cph.CodeAPINotFound
}

// ScheduleRetire enqueues rotation id's retire to run on the workers
// after delay, once: a retire already scheduled is left as it is
// (scheduled false, and due is when it was scheduled for). The rotation is
// checked as Retire checks it, now and again when the task runs.
func ScheduleRetire(ctx context.Context, store *Store, enq Enqueuer, id string, opts RetireOptions, delay time.Duration, now time.Time) (due time.Time, scheduled bool, err error) {
	rots, err := retirable(ctx, store, id, opts)
	if err != nil {
		return time.Time{}, false, err
	}
	due = now.Add(delay).UTC().Truncate(time.Millisecond)
	p := RetirePayload{Rotation: id, AllowIncomplete: opts.AllowIncomplete, Actor: opts.Actor, V: SchemaVersion}
	scheduled, err = enqueue(ctx, enq, TypeRetire, p, RetireTaskID(id), asynq.Queue(store.Namespace().Queue(QueueSubmit)),
		asynq.ProcessIn(delay), asynq.MaxRetry(10), asynq.Timeout(RetireTimeout))
	if err != nil {
		return time.Time{}, false, err
	}
	if !scheduled {
		return rots[0].RetireDue, false, nil
	}
	for _, rot := range rots {
		if err := store.setRetire(ctx, rot.ID, "retire_due", strconv.FormatInt(due.UnixMilli(), 10), "retire_err", ""); err != nil {
			return due, true, err
		}
	}
	return due, true, nil
}

// HandleRetire runs a scheduled retire with the worker's clients. Its
// outcome is stored with the rotation; a failure is stored too (shown
// next to it), and retried unless retrying cannot help (refused, denied,
// not found).
func (h *Handler) HandleRetire(ctx context.Context, t *asynq.Task) error {
	var p RetirePayload
	if err := decode(t.Payload(), &p, "retire"); err != nil {
		return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
	}
	log := h.log.With("rotation", p.Rotation, "task", "retire")
	if p.V > SchemaVersion {
		return h.unknownSchema(ctx, log, "task", p.V)
	}
	if h.retire == nil {
		return fmt.Errorf("retire %s: this worker was built without KPS clients: %w", p.Rotation, asynq.SkipRetry)
	}
	r, err := Retire(ctx, h.store, h.retire, p.Rotation, RetireOptions{AllowIncomplete: p.AllowIncomplete, Actor: cmp.Or(p.Actor, SystemActor)}, h.now())
	if err != nil {
		wctx, cancel := detached(ctx)
		defer cancel()
		h.retireFailed(wctx, log, p.Rotation, err)
		if errors.Is(err, ErrRetireRefused) || errors.Is(err, ErrNotFound) || cph.KindOf(err) == cph.KindPermanent {
			return fmt.Errorf("%w: %w", err, asynq.SkipRetry)
		}
		return err
	}
	for _, rp := range r.Places {
		log.InfoContext(ctx, "old keypairs retired", "part", rp.Rotation, "region", rp.Region, "project_id", rp.ProjectID,
			"deleted", len(rp.Deleted), "kept", len(rp.Kept))
	}
	return nil
}

// retireFailed stores a scheduled retire's error with each rotation id
// names, so status shows why no outcome came.
func (h *Handler) retireFailed(ctx context.Context, log *slog.Logger, id string, rerr error) {
	log.ErrorContext(ctx, "retire failed", "err", rerr)
	ids := []string{id}
	if g, err := h.store.Group(ctx, id); err == nil {
		ids = g.Parts
	}
	for _, pid := range ids {
		if err := h.store.setRetire(ctx, pid, "retire_err", oneLine(rerr.Error())); err != nil && !errors.Is(err, ErrNotFound) {
			log.WarnContext(ctx, "store the retire's error", "part", pid, "err", err)
		}
	}
}

// setRetireScript sets (or, for an empty value, deletes) fields of an
// existing rotation's record, never creating one for a rotation whose
// retention has ended. KEYS: meta. ARGV: field, value, …
var setRetireScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return redis.error_reply('not found') end
for i = 1, #ARGV, 2 do
  if ARGV[i + 1] == '' then redis.call('HDEL', KEYS[1], ARGV[i]) else redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 0
`)

func (s *Store) setRetire(ctx context.Context, id string, fieldValues ...string) error {
	args := make([]any, len(fieldValues))
	for i, v := range fieldValues {
		args[i] = v
	}
	err := setRetireScript.Run(ctx, s.rdb, []string{s.metaKey(id)}, args...).Err()
	if err != nil && err.Error() == "not found" {
		return fmt.Errorf("rotation %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("rotation %s: store its retire: %w", id, err)
	}
	return nil
}

// SetRetired stores a retire's outcome in rotation id's record (the meta
// hash, so it lives as long as the record and its report), replacing an
// earlier one and clearing a scheduled retire's due time and error.
func (s *Store) SetRetired(ctx context.Context, id string, rp *RetiredPlace) error {
	data, err := json.Marshal(rp)
	if err != nil {
		return fmt.Errorf("rotation %s: encode its retire: %w", id, err)
	}
	return s.setRetire(ctx, id, "retire", string(data), "retire_due", "", "retire_err", "")
}

// retiredOf reads a stored retire's outcome (nil: none, or unreadable).
func retiredOf(m map[string]string) *RetiredPlace {
	if m["retire"] == "" {
		return nil
	}
	var rp RetiredPlace
	if json.Unmarshal([]byte(m["retire"]), &rp) != nil {
		return nil
	}
	return &rp
}
