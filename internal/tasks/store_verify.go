package tasks

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/movinglist"
)

// What verification keeps per rotation besides the verification set:
// how the project's list has moved since the plan read it (meta field
// vdrift, a movinglist.Drift), the places it learned of targets the plan
// did not place
// (:where, server → place, -1 until learned), how far its sweep of the
// list has come (meta sweep, sweep_done; show_refused when ShowServer
// failed for good), and when a server's read-back first failed (:vfail,
// server → ms), from which its deadline counts.

func (s *Store) whereKey(id string) string { return s.prefix + "{" + id + "}:where" }
func (s *Store) vfailKey(id string) string { return s.prefix + "{" + id + "}:vfail" }

// learned returns the places verification learned for servers (those it
// has not learned are left out).
func (s *Store) learned(ctx context.Context, id string, servers []string) (map[string]int, error) {
	v, err := s.rdb.HMGet(ctx, s.whereKey(id), servers...).Result()
	if err != nil {
		return nil, fmt.Errorf("read learned places of %s: %w", id, err)
	}
	out := map[string]int{}
	for i, x := range v {
		str, _ := x.(string)
		if pos, err := strconv.Atoi(str); err == nil && pos >= 0 {
			out[servers[i]] = pos
		}
	}
	return out, nil
}

// learnScript records the places of the rotation's unplaced targets found
// on a page. KEYS: where. ARGV: pairs of server and place.
var learnScript = redis.NewScript(`
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1])
    n = n + 1
  end
end
return n
`)

// Learn records the places of servers a page read showed, for those that
// are targets of the rotation the plan did not place; it reports how many
// it recorded.
func (s *Store) Learn(ctx context.Context, id string, places map[string]int) (int, error) {
	if len(places) == 0 {
		return 0, nil
	}
	args := make([]any, 0, 2*len(places))
	for sid, pos := range places {
		args = append(args, sid, pos)
	}
	n, err := learnScript.Run(ctx, s.rdb, []string{s.whereKey(id)}, args...).Int()
	if err != nil {
		return 0, fmt.Errorf("record learned places of %s: %w", id, err)
	}
	return n, nil
}

// SetDrift records how the project's list has moved since the plan read
// it.
func (s *Store) SetDrift(ctx context.Context, id string, d movinglist.Drift) error {
	if err := s.rdb.HSet(ctx, s.metaKey(id), "vdrift", driftText(d)).Err(); err != nil {
		return fmt.Errorf("record list drift of %s: %w", id, err)
	}
	return nil
}

func driftText(d movinglist.Drift) string {
	b, _ := d.MarshalText() // never fails
	return string(b)
}

// SetSweep records how far the sweep of the list for unplaced targets has
// come: the next offset, and whether it is done.
func (s *Store) SetSweep(ctx context.Context, id string, next int, done bool) error {
	if err := s.rdb.HSet(ctx, s.metaKey(id), "sweep", next, "sweep_done", flag(done)).Err(); err != nil {
		return fmt.Errorf("record list sweep of %s: %w", id, err)
	}
	return nil
}

// ReadFailed records that reading servers back failed at now (the first
// failure of each is kept) and returns when each first failed.
func (s *Store) ReadFailed(ctx context.Context, id string, servers []string, now time.Time) (map[string]time.Time, error) {
	pipe := s.rdb.Pipeline()
	for _, sid := range servers {
		pipe.HSetNX(ctx, s.vfailKey(id), sid, now.UnixMilli())
	}
	get := pipe.HMGet(ctx, s.vfailKey(id), servers...)
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("record failed read-backs of %s: %w", id, err)
	}
	out := make(map[string]time.Time, len(servers))
	for i, x := range get.Val() {
		str, _ := x.(string)
		if ms, err := strconv.ParseInt(str, 10, 64); err == nil {
			out[servers[i]] = time.UnixMilli(ms)
		}
	}
	return out, nil
}

// ShowRefused records that ShowServer failed for good, so servers
// without a place are found by a sweep of the list instead.
func (s *Store) ShowRefused(ctx context.Context, id string) error {
	if err := s.rdb.HSet(ctx, s.metaKey(id), "show_refused", 1).Err(); err != nil {
		return fmt.Errorf("record ShowServer refused for %s: %w", id, err)
	}
	return nil
}
