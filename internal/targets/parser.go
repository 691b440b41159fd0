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
	probs   problems
}

func newParser(where string) *parser { return &parser{where: where} }

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

// add validates one entry found at position n.
func (p *parser) add(n int, id, keypair string) {
	ok := true
	if err := ValidateServerID(id); err != nil {
		p.problem(n, "%v", err)
		ok = false
	}
	if keypair != "" {
		if err := ValidateKeypairName(keypair); err != nil {
			p.problem(n, "%v", err)
			ok = false
		}
	}
	if ok {
		p.targets = append(p.targets, Target{ServerID: id, KeypairName: keypair})
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

// duplicates reports every repeat of a server id, naming where it was first
// seen: the same server twice in one rotation is a mistake in the list.
func (p *parser) duplicates() {
	idx := make([]int, len(p.targets))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int {
		return cmp.Or(cmp.Compare(p.targets[a].ServerID, p.targets[b].ServerID), cmp.Compare(a, b))
	})
	first := 0
	for i := 1; i < len(idx); i++ {
		id := p.targets[idx[i]].ServerID
		if id != p.targets[idx[first]].ServerID {
			first = i
			continue
		}
		p.problem(p.pos[idx[i]], "duplicate server id %s (first on %s %d)", quote(id), p.where, p.pos[idx[first]])
	}
}
