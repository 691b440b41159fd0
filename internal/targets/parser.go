package targets

import (
	"cmp"
	"fmt"
	"slices"
)

// parser collects the targets of one input and its problems. Each format
// feeds it entries with their position; duplicates are found at the end by
// sorting, which costs a few bytes per id instead of a map entry per id.
type parser struct {
	targets []Target
	pos     []int // line or element of targets[i]
	where   string
	opts    Options
	probs   problems
}

func newParser(where string, opts Options) *parser { return &parser{where: where, opts: opts} }

// problem records a problem at line or element n of the input (0: not at
// one place).
func (p *parser) problem(n int, format string, args ...any) {
	pr := Problem{Msg: fmt.Sprintf(format, args...)}
	if p.where == "element" {
		pr.Element = n
	} else {
		pr.Line = n
	}
	p.probs.add(pr)
}

// add validates one entry found at position n, giving it the default
// region and project when it names none.
func (p *parser) add(n int, t Target) {
	ok := true
	if err := ValidateServerID(t.ServerID); err != nil {
		p.problem(n, "%v", err)
		ok = false
	}
	if t.KeypairName != "" {
		if err := ValidateKeypairName(t.KeypairName); err != nil {
			p.problem(n, "%v", err)
			ok = false
		}
	}
	if t.Region == "" {
		t.Region = p.opts.Region
	} else if err := p.opts.validateRegion(t.Region); err != nil {
		p.problem(n, "%v", err)
		ok = false
	}
	if t.ProjectID == "" {
		t.ProjectID = p.opts.ProjectID
	} else if err := ValidateProjectID(t.ProjectID); err != nil {
		p.problem(n, "%v", err)
		ok = false
	}
	if ok {
		p.targets = append(p.targets, t)
		p.pos = append(p.pos, n)
	}
}

func (p *parser) finish() ([]Target, error) {
	p.duplicates()
	if p.probs.total == 0 && len(p.targets) == 0 {
		p.probs.add(Problem{Msg: "no targets in input"})
	}
	if err := p.probs.err(); err != nil {
		return nil, err
	}
	return p.targets, nil
}

// duplicates reports every repeat of a server id in one (region, project),
// naming where it was first seen: the same server twice in one rotation is
// a mistake in the list. Server ids are unique within a project only, so
// the same id in two places is two servers.
func (p *parser) duplicates() {
	idx := make([]int, len(p.targets))
	for i := range idx {
		idx[i] = i
	}
	same := func(a, b Target) int {
		return cmp.Or(cmp.Compare(a.ServerID, b.ServerID), cmp.Compare(a.Region, b.Region), cmp.Compare(a.ProjectID, b.ProjectID))
	}
	slices.SortFunc(idx, func(a, b int) int {
		return cmp.Or(same(p.targets[a], p.targets[b]), cmp.Compare(a, b))
	})
	first := 0
	for i := 1; i < len(idx); i++ {
		t := p.targets[idx[i]]
		if same(t, p.targets[idx[first]]) != 0 {
			first = i
			continue
		}
		p.problem(p.pos[idx[i]], "duplicate server id %s%s (first on %s %d)", quote(t.ServerID), t.place(), p.where, p.pos[idx[first]])
	}
}
