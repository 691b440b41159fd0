package targets

import (
	"bufio"
	"bytes"
	"cmp"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// Target is one server to rotate, in its region and project.
type Target struct {
	ServerID string
	// KeypairName overrides the rotation's keypair for this server; ""
	// means the rotation's --keypair.
	KeypairName string
	// Region and ProjectID place the server; a target that names neither
	// takes Options.Region and Options.ProjectID ("" when those are
	// empty too: the workers' own region and project).
	Region    string
	ProjectID string
}

// place describes t's region and project for a message ("" when it has
// none).
func (t Target) place() string {
	if t.Region == "" && t.ProjectID == "" {
		return ""
	}
	return fmt.Sprintf(" in %s/%s", cmp.Or(t.Region, "(default region)"), cmp.Or(t.ProjectID, "(default project)"))
}

// Options say how Read reads a list.
type Options struct {
	// Format is the list's layout; Auto detects it.
	Format Format
	// Region and ProjectID are the place of targets that name none (the
	// --region and HUAWEICLOUD_SDK_PROJECT_ID of the command); a target
	// naming one that is the same is the same place.
	Region, ProjectID string
	// Regions are the regions a target may name; nil: the regions the CPH
	// API is known to be served in (cph.Regions).
	Regions []string
}

func (o Options) validateRegion(r string) error { return ValidateRegion(r, o.Regions) }

// ValidateRegion refuses a region not among known (nil: the regions the
// CPH API is known to be served in, cph.Regions), naming the known ones
// and how to give another an endpoint.
func ValidateRegion(r string, known []string) error {
	if known == nil {
		known = cph.Regions()
	}
	if slices.Contains(known, r) {
		return nil
	}
	return fmt.Errorf("unknown region %s (known: %s; another needs an endpoint: --endpoint %s=URL or %s)",
		quote(r), strings.Join(known, ", "), r, cph.RegionEnv(r))
}

// Format is the layout of a target list.
type Format int

// The formats Parse understands. The zero value is Auto.
const (
	Auto  Format = iota // detect from the first bytes of the input
	Lines               // one server id per line, # comments
	CSV                 // header row with server_id and optionally keypair_name, region, project_id
	JSON                // array of id strings or of {"server_id","keypair_name","region","project_id"} objects
)

var formatNames = [...]string{Auto: "auto", Lines: "lines", CSV: "csv", JSON: "json"}

// String returns the name ParseFormat accepts.
func (f Format) String() string {
	if f < 0 || int(f) >= len(formatNames) {
		return fmt.Sprintf("Format(%d)", int(f))
	}
	return formatNames[f]
}

// ParseFormat parses a --format value: "auto", "lines", "csv" or "json".
func ParseFormat(s string) (Format, error) {
	for f, name := range formatNames {
		if strings.EqualFold(s, name) {
			return Format(f), nil
		}
	}
	return Auto, fmt.Errorf("unknown target format %q (want auto, lines, csv or json)", s)
}

// Set implements flag.Value, so a command can declare fs.Var(&f, "format", …).
func (f *Format) Set(s string) error {
	v, err := ParseFormat(s)
	if err != nil {
		return err
	}
	*f = v
	return nil
}

// MaxLineBytes is the longest line the lines and CSV formats accept; a
// longer line is a problem naming its number. JSON has no line limit, since
// a whole array on one line is normal there.
const MaxLineBytes = 64 << 10

// Parse reads a target list in format f (Auto detects it) and validates all
// of it. On bad input it returns an *InputError listing the problems (at
// most MaxProblems of them, in input order) and no targets; any other error
// is a failure to read r.
func Parse(r io.Reader, f Format) ([]Target, error) {
	return Read(r, Options{Format: f})
}

// Read reads and validates a target list as Parse does, placing targets
// that name no region or project in opts' defaults; a region a target
// names must be one of opts.Regions, a project id 32 hex digits, and a
// server id may appear once in each (region, project).
func Read(r io.Reader, opts Options) ([]Target, error) {
	f := opts.Format
	br := bufio.NewReaderSize(r, MaxLineBytes)
	if err := skipBOM(br); err != nil {
		return nil, fmt.Errorf("read targets: %w", err)
	}
	if f == Auto {
		var err error
		if f, err = detect(br); err != nil {
			return nil, fmt.Errorf("read targets: %w", err)
		}
	}
	var p *parser
	var err error
	switch f {
	case Lines:
		p = newParser("line", opts)
		err = p.lines(br)
	case CSV:
		p = newParser("line", opts)
		err = p.csv(br)
	case JSON:
		p = newParser("element", opts)
		err = p.json(br)
	default:
		return nil, fmt.Errorf("parse targets: unknown format %v", f)
	}
	if err != nil {
		return nil, fmt.Errorf("read targets: %w", err)
	}
	return p.finish()
}

var bom = []byte("\xef\xbb\xbf")

// skipBOM drops a UTF-8 byte order mark, which spreadsheet exports and
// Windows editors put at the start of files.
func skipBOM(br *bufio.Reader) error {
	b, err := br.Peek(len(bom))
	if !bytes.Equal(b, bom) {
		if err == io.EOF {
			return nil
		}
		return err
	}
	_, err = br.Discard(len(bom))
	return err
}

// detect picks the format from the first bytes of the input, without
// consuming them: '[' first means JSON; a first non-comment line that is a
// CSV header naming server_id means CSV; anything else is lines. Only the
// first MaxLineBytes are looked at.
func detect(br *bufio.Reader) (Format, error) {
	b, err := br.Peek(MaxLineBytes)
	if err != nil && err != io.EOF && err != bufio.ErrBufferFull {
		return Auto, err
	}
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) > 0 && t[0] == '[' {
		return JSON, nil
	}
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		s := strings.TrimSpace(string(line))
		if s == "" || s[0] == '#' {
			continue
		}
		if isCSVHeader(s) {
			return CSV, nil
		}
		return Lines, nil
	}
	return Lines, nil
}

func isCSVHeader(line string) bool {
	l := strings.ToLower(line)
	return strings.Trim(l, `"`) == colServerID || strings.Contains(l, colServerID) && strings.Contains(l, ",")
}
