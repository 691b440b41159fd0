package rekey

import (
	"context"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// StatsBucket is the span of wall time a Bucket counts.
const StatsBucket = tasks.StatsBucket

// Stats are a rotation's failures by error code and its outcomes over
// time, kept as the workers record outcomes: reading them costs one Redis
// read however many servers the rotation has. The rotations console draws
// its failures and progress chart from them.
type Stats struct {
	// Failures are the failed servers by error code, most frequent first.
	Failures []Failures
	// History counts the outcomes of each StatsBucket, oldest first;
	// buckets in which nothing ended are left out.
	History []Bucket
}

// Failures are the servers that failed with one error code.
type Failures struct {
	Code     string
	Count    int64
	Examples []Row // the first servers that failed with it, up to three
}

// Bucket counts the servers that reached a terminal outcome from Start
// to Start + StatsBucket, and of those the ones that failed.
type Bucket struct {
	Start         time.Time
	Ended, Failed int64
}

// Stats reads the stats of rotations ids in one round trip, in the order
// of ids. A rotation with no outcome recorded yet, or none at all, has
// empty Stats.
func (c *Client) Stats(ctx context.Context, ids ...string) ([]*Stats, error) {
	for _, id := range ids {
		if err := tasks.ValidateRotationID(id); err != nil {
			return nil, &InputError{Err: err}
		}
	}
	sts, err := c.store.StatsOf(ctx, ids)
	if err != nil {
		return nil, wrap(err)
	}
	out := make([]*Stats, len(sts))
	for i, st := range sts {
		s := &Stats{}
		for _, f := range st.Failures {
			fs := Failures{Code: f.Code, Count: f.Count}
			for _, r := range f.Examples {
				fs.Examples = append(fs.Examples, rowOf(r))
			}
			s.Failures = append(s.Failures, fs)
		}
		for _, b := range st.History {
			s.History = append(s.History, Bucket{Start: b.Start, Ended: b.Ended, Failed: b.Failed})
		}
		out[i] = s
	}
	return out, nil
}
