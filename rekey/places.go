package rekey

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// placeOf is t's place, with the client's own region and project left
// empty: a rotation in them is the workers' default place, and keeps the
// id it had before targets carried places.
func (c *Client) placeOf(t Target) tasks.Place {
	p := tasks.Place{Region: t.Region, ProjectID: t.ProjectID}
	if c.cph != nil {
		if p.Region == c.cph.Region {
			p.Region = ""
		}
		if p.ProjectID == c.cph.ProjectID {
			p.ProjectID = ""
		}
	}
	return p
}

// apiAt is the CPH client of place p: the client's own for the default
// place, and one built the first time for any other, on the region's
// endpoint (cph.Endpoints) and the place's project, with the same
// credentials and read rate.
func (c *Client) apiAt(p tasks.Place) (*cph.Client, error) {
	if c.api == nil {
		return nil, badInput("reading the fleet needs the client's Options.CPH")
	}
	if p.IsZero() {
		return c.api, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if api := c.placed[p]; api != nil {
		return api, nil
	}
	cfg := c.cph.endpoints().Config(c.base, p.Region)
	if p.ProjectID != "" {
		cfg.ProjectID = p.ProjectID
	}
	api, err := cph.NewClient(cfg)
	if err != nil {
		return nil, &InputError{Err: fmt.Errorf("CPH client of %s: %w", p, err)}
	}
	if c.placed == nil {
		c.placed = map[tasks.Place]*cph.Client{}
	}
	c.placed[p] = api
	return api, nil
}

// oneProjectForTokens refuses a rotation over several projects signed by
// a token: an IAM token, and a security token's temporary keys, are issued
// for one project, while an AK/SK signs for every project the account has.
func (c *Client) oneProjectForTokens(specs []tasks.Spec) error {
	if c.cph == nil || c.cph.SecurityToken == "" && c.cph.IAMToken == "" {
		return nil
	}
	projects := map[string]bool{}
	for _, s := range specs {
		projects[s.Place.ProjectID] = true
	}
	if len(projects) > 1 {
		return badInput("the targets are in %d projects, but the credentials are a token scoped to one project (%s): "+
			"sign with a permanent AK/SK (HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK) to rotate across projects",
			len(projects), c.cph.ProjectID)
	}
	return nil
}

// partsOf returns the rotations id names: itself, or a group's parts.
func (c *Client) partsOf(ctx context.Context, id string) (parts []string, group bool, err error) {
	if err := tasks.ValidateRotationID(id); err != nil {
		return nil, false, &InputError{Err: err}
	}
	_, err = c.store.Rotation(ctx, id)
	if errors.Is(err, tasks.ErrNotFound) {
		g, gerr := c.store.Group(ctx, id)
		if gerr == nil {
			return g.Parts, true, nil
		}
		if !errors.Is(gerr, tasks.ErrNotFound) {
			err = gerr
		}
	}
	if err != nil {
		return nil, false, wrap(err)
	}
	return []string{id}, false, nil
}

// startGroup writes the group of plan's parts, then starts each part.
func (c *Client) startGroup(ctx context.Context, plan *Plan) (*Started, error) {
	g := &tasks.Group{ID: plan.Rotation, CreatedAt: time.Now(), MaxConcurrent: plan.MaxConcurrentRegions,
		MaxErrors: plan.MaxErrorsTotal, OnHalt: tasks.HaltPolicy(plan.OnRegionHalt)}
	for _, p := range plan.Parts {
		g.Parts = append(g.Parts, p.Rotation)
		g.Fingerprint += p.plan.Rotation.Fingerprint[:16]
	}
	// What spans the parts is the group's own: the same parts under
	// another budget or policy are other work.
	g.Fingerprint += fmt.Sprintf(":%d:%s", max(g.MaxErrors, -1), g.OnHalt)
	created, err := c.store.CreateGroup(ctx, g)
	if err != nil {
		return nil, wrap(err)
	}
	st := &Started{Created: created, Plan: plan}
	for i, p := range plan.Parts {
		if g.MaxConcurrent > 0 && i >= g.MaxConcurrent {
			// Written paused, so Start enqueues nothing: it waits for a
			// part to finish or halt (tasks.StartWaiting).
			// Only when created now: on a re-run it may have had its turn.
			created, err := c.store.Create(ctx, p.plan.Rotation, p.plan.Chunks, p.plan.Skipped, time.Now())
			if err != nil {
				return nil, wrap(err)
			}
			if created {
				if err := c.store.SetState(ctx, p.Rotation, tasks.StatePaused, tasks.WaitReason, tasks.SystemActor); err != nil {
					return nil, wrap(err)
				}
			}
		}
		opts := c.tasks
		opts.Retention = p.plan.Rotation.Retention
		pst, err := tasks.Start(ctx, c.store, c.enq, p.plan, opts, time.Now())
		if err != nil {
			return nil, wrap(fmt.Errorf("start %s (%s): %w", p.Rotation, p.plan.Rotation.Place(), err))
		}
		st.Enqueued += pst.Enqueued
	}
	// A part that ended as it was written (every server skipped) could
	// not start a part written after it.
	if err := tasks.StartWaiting(ctx, c.store, c.enq, g.ID, c.tasks); err != nil {
		return nil, wrap(err)
	}
	st.Rotation, err = c.Rotation(ctx, plan.Rotation)
	return st, err
}

// groupRotation sums a group's parts into one Rotation, which keeps them
// as Parts. It is running while a part runs and none is halted, paused
// while the parts left are paused, halted (failed, not finished) while the
// group or a part is, and once every part has finished: failed if one
// failed or the rotation-wide budget is exceeded, completed with errors if
// one did, cancelled if one was, else succeeded (tasks.GroupSummary, the
// group's completion event, says the same).
func groupRotation(g *tasks.Group, parts []*Rotation) *Rotation {
	r := &Rotation{ID: g.ID, Keypair: parts[0].Keypair, ChunkSize: parts[0].ChunkSize, MaxAttempts: parts[0].MaxAttempts,
		Verify: parts[0].Verify, PauseAfterWave: parts[0].PauseAfterWave, Retention: parts[0].Retention, CreatedAt: g.CreatedAt,
		Parts: parts, MaxErrorsTotal: g.MaxErrors, OnRegionHalt: HaltPolicy(g.OnHalt), Reason: g.Halted}
	finished, open := true, map[State]int{}
	for _, p := range parts {
		r.Counts = r.Counts.add(p.Counts)
		r.MaxErrors += p.MaxErrors
		r.Chunks += p.Chunks
		r.Batches += p.Batches
		r.Waves = max(r.Waves, p.Waves)
		if p.Finished() {
			r.FinishedAt = maxTime(r.FinishedAt, p.FinishedAt)
		} else {
			finished = false
			open[p.State]++
			if r.Wave == 0 || p.Wave < r.Wave {
				r.Wave = p.Wave
			}
		}
		if p.Halted() && r.Reason == "" {
			r.Reason = fmt.Sprintf("%s (%s/%s) halted: %s", p.ID, p.Region, p.ProjectID, p.Reason)
		}
		if p.Retired != nil {
			if r.Retired == nil {
				r.Retired = &Retirement{Rotation: g.ID}
			}
			r.Retired.At = maxTime(r.Retired.At, p.Retired.At)
			r.Retired.Places = append(r.Retired.Places, p.Retired.Places...)
		}
		r.RetireDue = maxTime(r.RetireDue, p.RetireDue)
		r.RetireError = cmp.Or(r.RetireError, p.RetireError)
	}
	overBudget := g.MaxErrors >= 0 && r.Counts.Failed > int64(g.MaxErrors)
	if overBudget && r.Reason == "" {
		r.Reason = fmt.Sprintf("rotation-wide error budget exceeded: %d failed > max %d across its parts", r.Counts.Failed, g.MaxErrors)
	}
	if !finished {
		r.FinishedAt = time.Time{}
		switch {
		case r.Reason != "":
			r.State = StateFailed
		case open[StateRunning] > 0:
			r.State = StateRunning
		case open[StatePaused] > 0:
			r.State, r.Reason = StatePaused, "paused by an operator"
		default:
			r.State = StateCancelled
		}
		return r
	}
	r.Wave = r.Waves
	states := map[tasks.State]int{}
	for _, p := range parts {
		states[tasks.State(p.State)]++
	}
	r.State = State(tasks.GroupEnd(states, overBudget))
	return r
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
