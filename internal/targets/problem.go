package targets

import (
	"fmt"
	"strings"
)

// MaxProblems is how many problems an InputError keeps; the rest are only
// counted, so a wrong file does not flood the terminal or the memory.
const MaxProblems = 20

// Problem is one reason the input was rejected.
type Problem struct {
	Line    int // 1-based line of the lines or CSV input; 0 if not about a line
	Element int // 1-based position in the JSON array; 0 if not about an element
	Msg     string
}

func (p Problem) String() string {
	switch {
	case p.Line > 0:
		return fmt.Sprintf("line %d: %s", p.Line, p.Msg)
	case p.Element > 0:
		return fmt.Sprintf("element %d (index %d): %s", p.Element, p.Element-1, p.Msg)
	}
	return p.Msg
}

// pos orders problems; a parse yields either lines or elements, never both.
func (p Problem) pos() int { return max(p.Line, p.Element) }

// InputError is bad input: the command should print it and exit 2.
type InputError struct {
	Problems []Problem // at most MaxProblems, in input order
	Omitted  int       // further problems found but not kept
}

// Error returns every kept problem on its own line, then how many more
// there were.
func (e *InputError) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	if e.Omitted > 0 {
		fmt.Fprintf(&b, "\nand %d more", e.Omitted)
	}
	return b.String()
}

// problems keeps the MaxProblems earliest problems in input order, whatever
// order they are found in (duplicates are found after the whole input).
type problems struct {
	kept  []Problem
	total int
}

func (ps *problems) add(p Problem) {
	ps.total++
	i := len(ps.kept)
	for i > 0 && ps.kept[i-1].pos() > p.pos() {
		i--
	}
	if i == MaxProblems {
		return
	}
	ps.kept = append(ps.kept, Problem{})
	copy(ps.kept[i+1:], ps.kept[i:])
	ps.kept[i] = p
	if len(ps.kept) > MaxProblems {
		ps.kept = ps.kept[:MaxProblems]
	}
}

func (ps *problems) err() error {
	if ps.total == 0 {
		return nil
	}
	return &InputError{Problems: ps.kept, Omitted: ps.total - len(ps.kept)}
}
