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

// Group is a rotation across places: one rotation a place (its parts),
// started together under one id, each with its own endpoint, quota, error
// budget and controls, as a CloudFormation StackSet operation has a stack
// instance a region.
type Group struct {
	ID          string
	Fingerprint string
	// Parts are the part rotations' ids, in the order they were planned
	// (the region order first).
	Parts []string
	// MaxConcurrent is how many parts run at once (0: all); the others
	// wait, paused with WaitReason, and start in order as parts finish.
	MaxConcurrent int
	CreatedAt     time.Time
}

// WaitReason is the reason of a part waiting for its turn.
const WaitReason = "waiting for its turn (--max-concurrent-regions)"

// Waiting reports whether the rotation is a part waiting for its turn.
func (r *Rotation) Waiting() bool {
	return r.Group != "" && r.State == StatePaused && r.Reason == WaitReason && !r.Finished()
}

// PartID names part n (1-based) of group id.
func PartID(group string, n int) string { return group + "." + strconv.Itoa(n) }

// createGroupScript writes a group unless one exists: 0 created, 1 the
// same group (same fingerprint) exists, -1 the id names other work.
var createGroupScript = redis.NewScript(`
local fp = redis.call('HGET', KEYS[1], 'fingerprint')
if fp then
  if fp == ARGV[1] then return 1 end
  return -1
end
redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'created_at', ARGV[2], 'parts', ARGV[3], 'max_concurrent', ARGV[4])
return 0
`)

// CreateGroup writes g unless it exists: created is false for the same
// group written before, and the error ErrConflict when g.ID is taken by
// other work. Its parts are created apart (Create), after it.
func (s *Store) CreateGroup(ctx context.Context, g *Group) (created bool, err error) {
	res, err := createGroupScript.Run(ctx, s.rdb, []string{s.groupKey(g.ID)},
		g.Fingerprint, g.CreatedAt.UnixMilli(), strings.Join(g.Parts, ","), g.MaxConcurrent).Int()
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
	return &Group{ID: id, Fingerprint: m["fingerprint"], Parts: strings.Split(m["parts"], ","), MaxConcurrent: n,
		CreatedAt: time.UnixMilli(ms).UTC()}, nil
}

// startWaiting starts the waiting parts of group, in order, while fewer
// than its MaxConcurrent parts run: a part that has finished, or is
// halted by its error budget, frees its place. Every finish of a part
// runs it (a re-run too), and two finishers at once start the same parts,
// so nothing is left waiting for an operator. A part an operator paused
// keeps the others waiting.
func startWaiting(ctx context.Context, store *Store, enq Enqueuer, group string, opts TaskOptions) error {
	g, err := store.Group(ctx, group)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil || g.MaxConcurrent <= 0 {
		return err
	}
	active := 0
	var waiting []string
	for _, id := range g.Parts {
		r, err := store.Rotation(ctx, id)
		if err != nil {
			return err
		}
		switch {
		case r.Finished(), r.Halted():
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
