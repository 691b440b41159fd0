package tasks

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// TickChain is a rotation's chain of ticks as its record holds it.
type TickChain struct {
	Gen, Seq int
	// Running: tick Seq has claimed the chain and runs; otherwise tick
	// Seq+1 is due next.
	Running bool
	// Live: the chain has a next tick (false: it ended, or never began).
	Live bool
}

// Task is the tick that must be queued or running while the chain lives.
func (c TickChain) Task() TickPayload {
	if c.Running {
		return TickPayload{Gen: c.Gen, Seq: c.Seq}
	}
	return TickPayload{Gen: c.Gen, Seq: c.Seq + 1}
}

// TickChain reads the rotation's chain of ticks.
func (s *Store) TickChain(ctx context.Context, id string) (TickChain, error) {
	v, err := s.rdb.HMGet(ctx, s.metaKey(id), "tgen", "tseq", "tick_running", "tick_at").Result()
	if err != nil {
		return TickChain{}, fmt.Errorf("read tick chain of %s: %w", id, err)
	}
	str := func(i int) string { s, _ := v[i].(string); return s }
	var c TickChain
	c.Gen, _ = strconv.Atoi(str(0))
	c.Seq, _ = strconv.Atoi(str(1))
	c.Running = str(2) == "1"
	c.Live = str(3) != ""
	return c, nil
}

// reviveScript starts a new chain of ticks in place of chain c, if the
// record still holds c as it was read: a tick that moved on meanwhile
// shows its chain alive. KEYS: meta. ARGV: gen, seq, running (1/0), due
// (ms). It returns the new chain's generation, or 0.
var reviveScript = redis.NewScript(`
local m = redis.call('HMGET', KEYS[1], 'tgen', 'tseq', 'tick_running', 'tick_at')
if not m[4] or tonumber(m[1] or '0') ~= tonumber(ARGV[1]) or tonumber(m[2] or '0') ~= tonumber(ARGV[2])
   or (m[3] == '1') ~= (ARGV[3] == '1') then
  return 0
end
local g = redis.call('HINCRBY', KEYS[1], 'tgen', 1)
redis.call('HSET', KEYS[1], 'tseq', 0, 'tick_at', ARGV[4], 'tick_running', 0)
return g
`)

// Revive replaces chain c, whose tick task is gone (deleted or archived
// through asynq's Inspector, or lost with a write Redis lost), by a new
// chain due at due, and returns the generation whose first tick to
// enqueue; 0 when the chain has moved on since it was read. The old
// chain's ticks, should one turn up, find a newer chain and do nothing.
func (s *Store) Revive(ctx context.Context, id string, c TickChain, due time.Time) (int, error) {
	g, err := reviveScript.Run(ctx, s.rdb, []string{s.metaKey(id)}, c.Gen, c.Seq, flag(c.Running), due.UnixMilli()).Int()
	if err != nil {
		return 0, fmt.Errorf("revive tick chain of %s: %w", id, err)
	}
	return g, nil
}

// UnsentChunks returns the chunks up to chunk to (the last enqueued) whose
// first attempt has no checkpoint: submitted, closed, or being submitted
// by a task. It scans from the first such chunk the previous scan found
// (unsent_from in the record), so a scan costs the chunks enqueued since,
// not the rotation.
func (s *Store) UnsentChunks(ctx context.Context, id string, to int) ([]int, error) {
	from, err := s.rdb.HGet(ctx, s.metaKey(id), "unsent_from").Int()
	if errors.Is(err, redis.Nil) {
		from, err = 1, nil
	}
	if err != nil {
		return nil, fmt.Errorf("find unsent chunks of %s: %w", id, err)
	}
	var out []int
	const page = 500
	for lo := from; lo <= to; lo += page {
		pipe := s.rdb.Pipeline()
		hi := min(lo+page-1, to)
		for n := lo; n <= hi; n++ {
			pipe.HExists(ctx, s.batchKey(id, n), "cp")
		}
		cmds, err := pipe.Exec(ctx)
		if err != nil {
			return nil, fmt.Errorf("find unsent chunks of %s: %w", id, err)
		}
		for k, c := range cmds {
			if !c.(*redis.BoolCmd).Val() {
				out = append(out, lo+k)
			}
		}
	}
	next := to + 1
	if len(out) > 0 {
		next = out[0]
	}
	if next > from {
		if err := s.rdb.HSet(ctx, s.metaKey(id), "unsent_from", next).Err(); err != nil {
			return nil, fmt.Errorf("find unsent chunks of %s: %w", id, err)
		}
	}
	return out, nil
}

// Retained reports whether a finished rotation's record has its retention
// set: its follow-ups (completion event, then retention) are done.
func (s *Store) Retained(ctx context.Context, id string) (bool, error) {
	ttl, err := s.rdb.TTL(ctx, s.metaKey(id)).Result()
	if err != nil {
		return false, fmt.Errorf("read retention of %s: %w", id, err)
	}
	return ttl > 0, nil
}
