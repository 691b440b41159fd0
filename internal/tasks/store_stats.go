package tasks

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// The stats a rotation keeps for the console (<prefix>{<id>}:stats, a HASH
// written by the resolve script):
//
//	t:<bucket>      servers that reached a terminal outcome in the bucket
//	f:<bucket>      of which failed
//	c:<code>        failed servers by error code
//	x<n>:<code>     the code's n-th example: server id, tab, its record
//
// A bucket is StatsBucket of wall time. Only buckets in which outcomes were
// recorded exist, so a rotation paused for a day costs nothing; one running
// for a day at full speed has 8,640 of each.
const (
	StatsBucket   = 10 * time.Second
	statsBucketMs = "10000" // StatsBucket in ms, for the script
	statsExamples = "3"     // examples kept per error code, for the script
)

// Stats are a rotation's failures by error code and its progress over
// time, kept as outcomes are recorded so reading them costs one HGETALL of
// a few thousand fields at most, however many servers the rotation has.
type Stats struct {
	// Failures are the failed servers by error code, most frequent first.
	Failures []CodeFailures
	// History counts the outcomes recorded in each StatsBucket, oldest
	// first; buckets in which nothing ended are left out.
	History []Bucket
}

// CodeFailures are the servers that failed with one error code.
type CodeFailures struct {
	Code     string
	Count    int64
	Examples []ReportRow // the first servers that failed with it
}

// Bucket is the outcomes recorded in one StatsBucket.
type Bucket struct {
	Start  time.Time
	Ended  int64 // servers that reached a terminal outcome
	Failed int64 // of which failed
}

// Stats reads a rotation's stats. A rotation with none recorded yet has
// empty Stats; it is not an error.
func (s *Store) Stats(ctx context.Context, id string) (*Stats, error) {
	m, err := s.rdb.HGetAll(ctx, s.statsKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("read stats of %s: %w", id, err)
	}
	return statsOf(id, m)
}

// StatsOf reads the stats of several rotations in one pipeline, in the
// order of ids.
func (s *Store) StatsOf(ctx context.Context, ids []string) ([]*Stats, error) {
	pipe := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, len(ids))
	for i, id := range ids {
		cmds[i] = pipe.HGetAll(ctx, s.statsKey(id))
	}
	if _, err := pipe.Exec(ctx); err != nil {
		return nil, fmt.Errorf("read stats: %w", err)
	}
	out := make([]*Stats, len(ids))
	for i, c := range cmds {
		st, err := statsOf(ids[i], c.Val())
		if err != nil {
			return nil, err
		}
		out[i] = st
	}
	return out, nil
}

// statsOf decodes a rotation's stats hash.
func statsOf(id string, m map[string]string) (*Stats, error) {
	st := &Stats{}
	codes := map[string]*CodeFailures{}
	code := func(c string) *CodeFailures {
		if codes[c] == nil {
			codes[c] = &CodeFailures{Code: c}
		}
		return codes[c]
	}
	type example struct {
		n   int
		row ReportRow
	}
	examples := map[string][]example{}
	buckets := map[int64]*Bucket{}
	bucket := func(k string) *Bucket {
		n, _ := strconv.ParseInt(k, 10, 64)
		if buckets[n] == nil {
			buckets[n] = &Bucket{Start: time.UnixMilli(n * StatsBucket.Milliseconds()).UTC()}
		}
		return buckets[n]
	}
	for k, v := range m {
		kind, rest, ok := strings.Cut(k, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		switch {
		case kind == "t":
			bucket(rest).Ended = n
		case kind == "f":
			bucket(rest).Failed = n
		case kind == "c":
			code(rest).Count = n
		case strings.HasPrefix(kind, "x"):
			sid, recText, _ := strings.Cut(v, "\t")
			rec, err := decodeRecord(recText)
			if err != nil {
				return nil, fmt.Errorf("read stats of %s: example %s: %w", id, k, err)
			}
			n, _ := strconv.Atoi(kind[1:])
			code(rest)
			examples[rest] = append(examples[rest], example{n, ReportRow{ServerID: sid, JobID: rec.JobID, Attempts: rec.Attempts,
				Outcome: rec.Outcome, ErrorCode: rec.Code, ErrorMsg: rec.Message, FinishedAt: rec.FinishedAt}})
		}
	}
	for _, c := range codes {
		// In the order they failed: the script numbers them.
		ex := examples[c.Code]
		slices.SortFunc(ex, func(a, b example) int { return a.n - b.n })
		for _, e := range ex {
			c.Examples = append(c.Examples, e.row)
		}
		st.Failures = append(st.Failures, *c)
	}
	slices.SortFunc(st.Failures, func(a, b CodeFailures) int {
		if a.Count != b.Count {
			return int(b.Count - a.Count)
		}
		return strings.Compare(a.Code, b.Code)
	})
	for _, b := range buckets {
		st.History = append(st.History, *b)
	}
	slices.SortFunc(st.History, func(a, b Bucket) int { return a.Start.Compare(b.Start) })
	return st, nil
}

// RotationsPage lists up to limit rotations, newest first, starting offset
// rotations from the newest, and returns how many the index holds (some of
// which may have expired since). The records are read in one pipeline.
func (s *Store) RotationsPage(ctx context.Context, offset, limit int) ([]*Rotation, int, error) {
	total, err := s.rdb.ZCard(ctx, s.rotationsKey()).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("list rotations: %w", err)
	}
	ids, err := s.rdb.ZRevRange(ctx, s.rotationsKey(), int64(offset), int64(offset+limit)-1).Result()
	if err != nil {
		return nil, 0, fmt.Errorf("list rotations: %w", err)
	}
	pipe := s.rdb.Pipeline()
	for _, id := range ids {
		pipe.HGetAll(ctx, s.metaKey(id))
	}
	cmds, err := pipe.Exec(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("list rotations: %w", err)
	}
	out := make([]*Rotation, 0, len(ids))
	for _, c := range cmds {
		m := c.(*redis.MapStringStringCmd).Val()
		if len(m) == 0 {
			continue // expired after its retention
		}
		out = append(out, rotationOf(m))
	}
	return out, int(total), nil
}
