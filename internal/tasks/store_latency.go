package tasks

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// jobLatencyScript folds one observation into a rotation's estimate of
// how long its jobs take (job_lat in its meta hash, ms). The estimate
// rises at once to a longer observation and falls by an eighth of the gap
// toward a shorter one: a few slow jobs set it for the batches that follow
// (a poll that comes too early costs a second ListJobs call), while jobs
// that became faster bring it down within a few dozen polls. A rotation
// whose record has expired is left alone. KEYS: meta. ARGV: observed (ms).
// Returns the estimate (ms; 0: no rotation).
var jobLatencyScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old = tonumber(redis.call('HGET', KEYS[1], 'job_lat') or '0')
local new = tonumber(ARGV[1])
if new < old then new = old - math.floor((old - new) / 8) end
redis.call('HSET', KEYS[1], 'job_lat', new)
return new
`)

// ObserveJobLatency folds d, the longest job one ListJobs answer showed
// ended, into the rotation's job latency estimate (Rotation.jobLatency)
// and returns the new estimate.
func (s *Store) ObserveJobLatency(ctx context.Context, id string, d time.Duration) (time.Duration, error) {
	ms, err := jobLatencyScript.Run(ctx, s.rdb, []string{s.metaKey(id)}, max(d, 0).Milliseconds()).Int64()
	if err != nil {
		return 0, fmt.Errorf("record job latency of %s: %w", id, err)
	}
	return time.Duration(ms) * time.Millisecond, nil
}
