package admin

import (
	"context"
	"slices"

	"github.com/cph-rekey/cph-rekey/rekey"
)

// groupParts turns a page of rotations into the console's rows: a part of
// a rotation across places is shown in its group's row, read whole (every
// part, those on other pages too), where its first part on the page
// stands; the group's other parts on the page add no row. A group whose
// parts straddle two pages shows on both.
func (s *Server) groupParts(ctx context.Context, rots []*rekey.Rotation) ([]*rekey.Rotation, error) {
	out := make([]*rekey.Rotation, 0, len(rots))
	seen := map[string]bool{}
	for _, rot := range rots {
		if rot.Group == "" {
			out = append(out, rot)
			continue
		}
		if seen[rot.Group] {
			continue
		}
		seen[rot.Group] = true
		g, err := s.opts.Rotations.Rotation(ctx, rot.Group)
		if err != nil {
			return nil, err
		}
		out = append(out, g)
	}
	return out, nil
}

// mergeStats sums the stats of a group's parts: failures by error code
// (the most frequent first, with the first parts' examples), and the
// outcomes of each bucket of time. One Stats is returned as it is.
func mergeStats(sts []*rekey.Stats) *rekey.Stats {
	if len(sts) == 1 {
		return sts[0]
	}
	out := &rekey.Stats{}
	codes := map[string]int{}
	buckets := map[int64]int{}
	for _, st := range sts {
		for _, f := range st.Failures {
			i, ok := codes[f.Code]
			if !ok {
				i = len(out.Failures)
				codes[f.Code] = i
				out.Failures = append(out.Failures, rekey.Failures{Code: f.Code})
			}
			m := &out.Failures[i]
			m.Count += f.Count
			for _, e := range f.Examples {
				if len(m.Examples) < 3 {
					m.Examples = append(m.Examples, e)
				}
			}
		}
		for _, b := range st.History {
			k := b.Start.UnixMilli()
			i, ok := buckets[k]
			if !ok {
				i = len(out.History)
				buckets[k] = i
				out.History = append(out.History, rekey.Bucket{Start: b.Start})
			}
			out.History[i].Ended += b.Ended
			out.History[i].Failed += b.Failed
		}
	}
	slices.SortStableFunc(out.Failures, func(a, b rekey.Failures) int { return int(b.Count - a.Count) })
	slices.SortFunc(out.History, func(a, b rekey.Bucket) int { return a.Start.Compare(b.Start) })
	return out
}
