package rekey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// KeypairDeleteAction is the IAM action Retire needs to delete keypairs
// (DeleteKeypair); it also reads the fleet (cph:servers:list).
const KeypairDeleteAction = tasks.DeleteAction

// RetireOptions tune Retire and ScheduleRetire.
type RetireOptions struct {
	// DryRun reads the fleet and says what Retire would delete and keep;
	// it deletes and records nothing. ScheduleRetire refuses it.
	DryRun bool
	// AllowIncomplete retires the old keypairs of a rotation that did not
	// succeed (completed with errors, failed or cancelled). Its servers
	// still on an old keypair keep it anyway: the fleet is read back.
	AllowIncomplete bool
}

// Retirement is what a retire did (in a dry run: would do), place by
// place.
type Retirement struct {
	Rotation string `json:"rotation"`
	DryRun   bool   `json:"dry_run"`
	// At is when it ran (a rotation across places: its latest part's).
	At     time.Time      `json:"at"`
	Places []RetiredPlace `json:"places"`
}

// RetiredPlace is a retire's outcome in one (region, project).
type RetiredPlace struct {
	// Rotation is the rotation in the place: the rotation itself, or its
	// part there.
	Rotation  string    `json:"rotation"`
	Region    string    `json:"region"`
	ProjectID string    `json:"project_id"`
	At        time.Time `json:"at"`
	// Deleted are the old keypairs deleted from the project's KPS.
	Deleted []DeletedKeypair `json:"deleted"`
	// Kept are the old keypairs left in KPS, and why.
	Kept []KeptKeypair `json:"kept"`
	// Unrecorded counts servers whose old keypair the rotation did not
	// record (NoSkipMatching): their old keypairs are not retired.
	Unrecorded int `json:"unrecorded,omitempty"`
}

// DeletedKeypair is an old keypair deleted from KPS.
type DeletedKeypair struct {
	Keypair string `json:"keypair"`
	// AlreadyGone: KPS no longer held it, and no earlier retire of the
	// rotation had deleted it (one cut short before it stored its outcome,
	// or a deletion by hand); it counts as deleted.
	AlreadyGone bool `json:"already_gone,omitempty"`
}

// Why a retire kept an old keypair (KeptKeypair.Reason).
const (
	// KeptInUse: servers of the project are still on it.
	KeptInUse = tasks.KeptInUse
	// KeptTarget: the rotation puts servers on it.
	KeptTarget = tasks.KeptTarget
	// KeptRefused: KPS refused to delete it (KeptKeypair.Message says
	// why), e.g. a keypair an ECS server is bound to.
	KeptRefused = tasks.KeptRefused
)

// KeptKeypair is an old keypair a retire left in KPS.
type KeptKeypair struct {
	Keypair string `json:"keypair"`
	Reason  string `json:"reason"`
	// Servers counts the project's servers on it when the fleet was read;
	// Sample names the first five.
	Servers int      `json:"servers"`
	Sample  []string `json:"sample,omitempty"`
	// Message is KPS's answer to a refused delete (KeptRefused).
	Message string `json:"message,omitempty"`
}

// String says why k was kept: "3 servers still use it: s-1, s-2, s-3".
func (k KeptKeypair) String() string {
	return tasks.KeptKeypair{Keypair: k.Keypair, Reason: k.Reason, Servers: k.Servers, Sample: k.Sample, Message: k.Message}.String()
}

// Retire deletes rotation id's old keypairs (each server's keypair before
// the rotation, from its report) from the KPS of every (region, project)
// the rotation is in, where that project's server list, read back whole,
// shows no server on them. The rotation's target keypairs are never
// deleted. A keypair KPS no longer holds counts as deleted, so Retire is
// idempotent and a retire cut short is finished by running it again.
// Unless opts.DryRun, the outcome is stored with the rotation (Rotation.Retired)
// place by place, and Rollback refuses the rotation from then on.
//
// It needs Options.CPH and credentials allowed cph:servers:list and
// kps:SSHKeyPair:delete (KeypairDeleteAction; a 403 is an *APIError naming
// it). A rotation that has not finished, or that did not succeed (without
// opts.AllowIncomplete), is an *InputError, before anything is read.
func (c *Client) Retire(ctx context.Context, id string, opts RetireOptions) (*Retirement, error) {
	if err := tasks.ValidateRotationID(id); err != nil {
		return nil, &InputError{Err: err}
	}
	if c.cph == nil {
		return nil, badInput("retiring keypairs reads the fleet and KPS: the client needs Options.CPH")
	}
	actor, err := actorOf(ctx)
	if err != nil {
		return nil, err
	}
	r, err := tasks.Retire(ctx, c.store, c.retireAt, id, tasks.RetireOptions{DryRun: opts.DryRun, AllowIncomplete: opts.AllowIncomplete, Actor: actor}, time.Now())
	if err != nil {
		return retirementOf(r), retireError(err)
	}
	return retirementOf(r), nil
}

// ScheduledRetire is what ScheduleRetire did.
type ScheduledRetire struct {
	// Due is when the workers run the retire.
	Due time.Time
	// Scheduled is false when a retire of the rotation was scheduled
	// before: it is left as it was, due at Due.
	Scheduled bool
	// TaskID is the asynq task's id, as asynq's web UI shows it.
	TaskID string
}

// ScheduleRetire has the workers run Retire on rotation id after delay,
// as an asynq task (TaskID "retire-<id>", on the submit queue). Scheduling
// it again enqueues nothing. The rotation is checked as Retire checks it,
// now and when the task runs; the workers store the outcome with the
// rotation (Rotation.Retired), or the error of a run that failed
// (Rotation.RetireError).
func (c *Client) ScheduleRetire(ctx context.Context, id string, delay time.Duration, opts RetireOptions) (*ScheduledRetire, error) {
	if err := tasks.ValidateRotationID(id); err != nil {
		return nil, &InputError{Err: err}
	}
	if opts.DryRun {
		return nil, badInput("a dry run of a retire runs now: it cannot be scheduled")
	}
	if delay <= 0 {
		return nil, badInput("retire delay %s: want a positive duration", delay)
	}
	actor, err := actorOf(ctx)
	if err != nil {
		return nil, err
	}
	due, scheduled, err := tasks.ScheduleRetire(ctx, c.store, c.enq, id, tasks.RetireOptions{AllowIncomplete: opts.AllowIncomplete, Actor: actor}, delay, time.Now())
	if err != nil {
		return nil, retireError(err)
	}
	return &ScheduledRetire{Due: due, Scheduled: scheduled, TaskID: tasks.RetireTaskID(id)}, nil
}

// retireAt is what a retire needs in place p: its fleet, its KPS and its
// names (the client's own region and project for the default place).
func (c *Client) retireAt(p tasks.Place) (*tasks.RetireAt, error) {
	if p.ProjectID != "" && p.ProjectID != c.cph.ProjectID && (c.cph.SecurityToken != "" || c.cph.IAMToken != "") {
		return nil, badInput("the credentials are a token scoped to project %s, not %s: sign with a permanent AK/SK (HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK) to retire across projects",
			c.cph.ProjectID, p.ProjectID)
	}
	api, err := c.apiAt(p)
	if err != nil {
		return nil, err
	}
	kc, err := c.kpsAt(p)
	if err != nil {
		return nil, err
	}
	return &tasks.RetireAt{Fleet: api, Keypairs: kc, Region: cmp.Or(p.Region, c.cph.Region), ProjectID: kc.ProjectID()}, nil
}

// retireError makes a refusal bad input.
func retireError(err error) error {
	if errors.Is(err, tasks.ErrRetireRefused) {
		return &InputError{Err: err}
	}
	return wrap(err)
}

func retirementOf(r *tasks.Retirement) *Retirement {
	if r == nil {
		return nil
	}
	out := &Retirement{Rotation: r.Rotation, DryRun: r.DryRun, At: r.At}
	for _, p := range r.Places {
		out.Places = append(out.Places, retiredPlaceOf(p))
	}
	return out
}

func retiredPlaceOf(p *tasks.RetiredPlace) RetiredPlace {
	out := RetiredPlace{Rotation: p.Rotation, Region: p.Region, ProjectID: p.ProjectID, At: p.At, Unrecorded: p.Unrecorded,
		Deleted: []DeletedKeypair{}, Kept: []KeptKeypair{}}
	for _, d := range p.Deleted {
		out.Deleted = append(out.Deleted, DeletedKeypair{Keypair: d.Keypair, AlreadyGone: d.AlreadyGone})
	}
	for _, k := range p.Kept {
		out.Kept = append(out.Kept, KeptKeypair{Keypair: k.Keypair, Reason: k.Reason, Servers: k.Servers, Sample: k.Sample, Message: k.Message})
	}
	return out
}

// deletedKeypairs names the keypairs rot's retires deleted, as "kp-old in
// region/project".
func deletedKeypairs(rot *Rotation) []string {
	if rot.Retired == nil {
		return nil
	}
	var names []string
	for _, p := range rot.Retired.Places {
		for _, d := range p.Deleted {
			names = append(names, fmt.Sprintf("%s in %s/%s", d.Keypair, p.Region, p.ProjectID))
		}
	}
	return names
}

// refuseRetired refuses to roll back a rotation whose old keypairs were
// retired: every server put back on one would fail.
func refuseRetired(rot *Rotation) error {
	names := deletedKeypairs(rot)
	if len(names) == 0 {
		return nil
	}
	return badInput("cannot roll back %s: its old keypairs were retired (deleted from KPS) at %s: %s; "+
		"a rollback would put servers on keypairs that no longer exist",
		rot.ID, rot.Retired.At.Format(time.RFC3339), strings.Join(names, ", "))
}
