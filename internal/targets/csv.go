package targets

import (
	"encoding/csv"
	"errors"
	"io"
	"strings"
)

// CSV header names, matched case-insensitively after trimming spaces.
const (
	colServerID    = "server_id"
	colKeypairName = "keypair_name"
	colRegion      = "region"
	colProjectID   = "project_id"
)

// csv reads a CSV list whose header names a server_id column and optionally
// keypair_name, region and project_id columns, in any order; other columns are ignored, lines
// starting with '#' are comments and fields are trimmed.
func (p *parser) csv(r io.Reader) error {
	lr := &lineLimitReader{r: r, line: 1}
	cr := csv.NewReader(lr)
	cr.Comment = '#'
	cr.ReuseRecord = true

	// read returns the next record, or ok=false at the end of what can be
	// read; malformed records become problems and are skipped.
	read := func() (rec []string, ok bool, err error) {
		for {
			rec, err := cr.Read()
			var pe *csv.ParseError
			var tl *lineTooLongError
			switch {
			case err == nil:
				return rec, true, nil
			case err == io.EOF:
				return nil, false, nil
			case errors.As(err, &tl):
				p.problem(tl.line, "longer than %d bytes (input not read further)", MaxLineBytes)
				return nil, false, nil
			case errors.As(err, &pe) && errors.Is(pe.Err, csv.ErrFieldCount):
				p.problem(pe.StartLine, "has %d fields, the header has %d", len(rec), cr.FieldsPerRecord)
			case errors.As(err, &pe):
				p.problem(pe.Line, "malformed CSV at column %d: %v", pe.Column, pe.Err)
			default:
				return nil, false, err
			}
		}
	}

	header, ok, err := read()
	if !ok || p.probs.total > 0 {
		return err // without a readable header no record can be read
	}
	headerLine, _ := cr.FieldPos(0)
	idCol, kpCol, regionCol, projectCol := -1, -1, -1, -1
	for i, h := range header {
		col := &idCol
		switch strings.ToLower(strings.TrimSpace(h)) {
		case colServerID:
		case colKeypairName:
			col = &kpCol
		case colRegion:
			col = &regionCol
		case colProjectID:
			col = &projectCol
		default:
			continue
		}
		if *col >= 0 {
			p.problem(headerLine, "CSV header names column %s twice", quote(strings.TrimSpace(h)))
			return nil
		}
		*col = i
	}
	if idCol < 0 {
		p.problem(headerLine, "CSV header %s has no %s column", quote(strings.Join(header, ",")), colServerID)
		return nil
	}

	for {
		rec, ok, err := read()
		if !ok {
			return err
		}
		line, _ := cr.FieldPos(idCol)
		// Clone, or each field would keep its whole record's text alive.
		field := func(col int) string {
			if col < 0 {
				return ""
			}
			return strings.Clone(strings.TrimSpace(rec[col]))
		}
		p.add(line, Target{ServerID: field(idCol), KeypairName: field(kpCol), Region: field(regionCol), ProjectID: field(projectCol)})
	}
}

// lineLimitReader fails a read that reaches a line longer than MaxLineBytes,
// since encoding/csv would otherwise buffer a line of any length.
type lineLimitReader struct {
	r    io.Reader
	line int // current line, 1-based
	run  int // bytes since the last newline
}

type lineTooLongError struct{ line int }

func (e *lineTooLongError) Error() string { return "line too long" }

func (l *lineLimitReader) Read(b []byte) (int, error) {
	n, err := l.r.Read(b)
	for i, c := range b[:n] {
		if c == '\n' {
			l.line++
			l.run = 0
			continue
		}
		if l.run++; l.run > MaxLineBytes {
			return i, &lineTooLongError{line: l.line}
		}
	}
	return n, err
}
