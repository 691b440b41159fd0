package targets

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
)

const (
	hexID  = "ae4d231e44d2a4ccf612660a473fe1e3"
	hexID2 = "2347275010d3440d963d3fcb8931ff55"
	uuidID = "1e223c8e-3ad0-4bf0-a837-bc90d4f91d01"
)

func ids(s ...string) []Target {
	ts := make([]Target, len(s))
	for i, id := range s {
		ts[i] = Target{ServerID: id}
	}
	return ts
}

type parseCase struct {
	name    string
	format  Format
	in      string
	want    []Target // nil when the input is bad
	probs   []string // Problem.String() of every kept problem
	omitted int
}

var longLine = strings.Repeat("a", MaxLineBytes+1)

var parseCases = []parseCase{
	// lines
	{name: "lines one id", format: Lines, in: hexID + "\n", want: ids(hexID)},
	{name: "lines comments blanks whitespace", format: Lines,
		in:   "# fleet A\n\n  " + hexID + "  \n\t" + hexID2 + "\t# canary\n   \n# end\n",
		want: ids(hexID, hexID2)},
	{name: "lines CRLF no final newline", format: Lines, in: hexID + "\r\n\r\n" + hexID2, want: ids(hexID, hexID2)},
	{name: "lines BOM", format: Lines, in: "\xef\xbb\xbf" + hexID + "\n", want: ids(hexID)},
	{name: "lines underscores and dashes", format: Lines, in: "srv_01-a\nSRV-02\n", want: ids("srv_01-a", "SRV-02")},
	{name: "lines UUID is over 32 bytes", format: Lines, in: uuidID + "\n",
		probs: []string{`line 1: server id "` + uuidID + `" is 36 bytes, longer than 32`}},
	{name: "lines space inside", format: Lines, in: hexID + "\nabc def\n",
		probs: []string{`line 2: server id "abc def" contains a space`}},
	{name: "lines tab inside", format: Lines, in: "abc\tdef\n", probs: []string{`line 1: server id "abc\tdef" contains a tab`}},
	{name: "lines control character", format: Lines, in: "abc\x07def\n",
		probs: []string{`line 1: server id "abc\adef" contains control character U+0007`}},
	{name: "lines NUL", format: Lines, in: "abc\x00\n", probs: []string{`line 1: server id "abc\x00" contains control character U+0000`}},
	{name: "lines non-breaking space inside", format: Lines, in: "abc\u00a0def\n",
		probs: []string{`line 1: server id "abc\u00a0def" contains whitespace U+00A0`}},
	{name: "lines too long id", format: Lines, in: hexID + "0\n",
		probs: []string{`line 1: server id "` + hexID + `0" is 33 bytes, longer than 32`}},
	{name: "lines non-ASCII", format: Lines, in: "serveré\n",
		probs: []string{`line 1: server id "serveré" contains 'é'; only letters, digits, '-' and '_' are allowed`}},
	{name: "lines invalid UTF-8", format: Lines, in: "ab\xffc\n", probs: []string{`line 1: server id "ab\xffc" contains invalid UTF-8 byte 0xff`}},
	{name: "lines comma", format: Lines, in: hexID + ",kp\n",
		probs: []string{`line 1: server id "` + hexID + `,kp" contains ','; only letters, digits, '-' and '_' are allowed`}},
	{name: "lines duplicate", format: Lines, in: "a\nb\n\na\nb\na\n", probs: []string{
		`line 4: duplicate server id "a" (first on line 1)`,
		`line 5: duplicate server id "b" (first on line 2)`,
		`line 6: duplicate server id "a" (first on line 1)`,
	}},
	{name: "lines empty input", format: Lines, in: "", probs: []string{"no targets in input"}},
	{name: "lines only comments", format: Lines, in: "# nothing yet\n\n  # really\r\n", probs: []string{"no targets in input"}},
	{name: "lines long line then more checked", format: Lines, in: "a\n" + longLine + "\nb c\nd\n", probs: []string{
		"line 2: longer than 65536 bytes",
		`line 3: server id "b c" contains a space`,
	}},
	{name: "lines long id quoted short", format: Lines, in: strings.Repeat("x", 100) + "\n",
		probs: []string{`line 1: server id "` + strings.Repeat("x", 40) + `"… is 100 bytes, longer than 32`}},
	{name: "lines many problems", format: Lines, in: strings.Repeat("a b\n", 25) + "ok\nok\n",
		probs: func() []string {
			var ps []string
			for i := 1; i <= MaxProblems; i++ {
				ps = append(ps, fmt.Sprintf(`line %d: server id "a b" contains a space`, i))
			}
			return ps
		}(), omitted: 6},
	{name: "lines duplicates merged in line order", format: Lines, in: "a\na\n" + strings.Repeat("x y\n", 25), probs: func() []string {
		ps := []string{`line 2: duplicate server id "a" (first on line 1)`}
		for i := 3; i <= MaxProblems+1; i++ {
			ps = append(ps, fmt.Sprintf(`line %d: server id "x y" contains a space`, i))
		}
		return ps
	}(), omitted: 6},

	// CSV
	{name: "csv server_id only", format: CSV, in: "server_id\n" + hexID + "\n" + hexID2 + "\n", want: ids(hexID, hexID2)},
	{name: "csv with keypair override", format: CSV, in: "server_id,keypair_name\n" + hexID + ",kp-2026\n" + hexID2 + ",\n",
		want: []Target{{ServerID: hexID, KeypairName: "kp-2026"}, {ServerID: hexID2}}},
	{name: "csv columns reordered extra quoted", format: CSV,
		in:   "name, Keypair_Name ,\"SERVER_ID\"\n\"web, eu\",kp_1,\"" + hexID + "\"\n\"multi\nline\", ," + hexID2 + " \n",
		want: []Target{{ServerID: hexID, KeypairName: "kp_1"}, {ServerID: hexID2}}},
	{name: "csv CRLF and BOM", format: CSV, in: "\xef\xbb\xbfserver_id,keypair_name\r\n" + hexID + ",kp\r\n",
		want: []Target{{ServerID: hexID, KeypairName: "kp"}}},
	{name: "csv comments before header", format: CSV, in: "# exported 2026-01-01\nserver_id\n# skip\n" + hexID + "\n", want: ids(hexID)},
	{name: "csv missing server_id column", format: CSV, in: "id,keypair_name\n" + hexID + ",kp\n",
		probs: []string{`line 1: CSV header "id,keypair_name" has no server_id column`}},
	{name: "csv duplicate column", format: CSV, in: "server_id,Server_ID\na,b\n",
		probs: []string{`line 1: CSV header names column "Server_ID" twice`}},
	{name: "csv wrong field count", format: CSV, in: "server_id,keypair_name\na,kp\nb\nc,kp,extra\nd,kp\n", probs: []string{
		"line 3: has 1 fields, the header has 2",
		"line 4: has 3 fields, the header has 2",
	}},
	{name: "csv bare quote", format: CSV, in: "server_id\na\"b\nc\n",
		probs: []string{`line 2: malformed CSV at column 2: bare " in non-quoted-field`}},
	{name: "csv unterminated quote", format: CSV, in: "server_id\n\"abc\n",
		probs: []string{`line 2: malformed CSV at column 6: extraneous or missing " in quoted-field`}},
	{name: "csv bad quote in header", format: CSV, in: "\"server_id\n",
		probs: []string{`line 1: malformed CSV at column 12: extraneous or missing " in quoted-field`}},
	{name: "csv bad keypair", format: CSV, in: "server_id,keypair_name\na,my key\nb," + strings.Repeat("k", 65) + "\n", probs: []string{
		`line 2: keypair name "my key" contains a space`,
		`line 3: keypair name "` + strings.Repeat("k", 40) + `"… is 65 bytes, longer than 64`,
	}},
	{name: "csv empty server id", format: CSV, in: "server_id,keypair_name\n,kp\n", probs: []string{"line 2: empty server id"}},
	{name: "csv header only", format: CSV, in: "server_id,keypair_name\n", probs: []string{"no targets in input"}},
	{name: "csv empty input", format: CSV, in: "", probs: []string{"no targets in input"}},
	{name: "csv duplicate after multiline field", format: CSV, in: "note,server_id\n\"x\ny\",a\nz,a\n",
		probs: []string{`line 4: duplicate server id "a" (first on line 3)`}},
	{name: "csv long line", format: CSV, in: "server_id\n" + longLine + "\nb\n",
		probs: []string{"line 2: longer than 65536 bytes (input not read further)"}},

	// JSON
	{name: "json strings", format: JSON, in: `["` + hexID + `","` + hexID2 + `"]`, want: ids(hexID, hexID2)},
	{name: "json objects", format: JSON,
		in:   `[{"server_id":"` + hexID + `","keypair_name":"kp-1"},{"server_id":"` + hexID2 + `"},{"keypair_name":"","server_id":"c"}]`,
		want: []Target{{ServerID: hexID, KeypairName: "kp-1"}, {ServerID: hexID2}, {ServerID: "c"}}},
	{name: "json mixed pretty BOM CRLF", format: JSON, in: "\xef\xbb\xbf[\r\n  \"a\",\r\n  {\"server_id\": \"b\", \"keypair_name\": null}\r\n]\r\n",
		want: ids("a", "b")},
	{name: "json unknown field", format: JSON, in: `["a",{"server_id":"b","keypair":"kp"}]`,
		probs: []string{`element 2 (index 1): unknown field "keypair"`}},
	{name: "json number", format: JSON, in: `12`,
		probs: []string{"JSON input must be an array of server ids or objects, not a number"}},
	{name: "json huge numbers", format: JSON, in: `[1e999, {"server_id": -1e999}]`, probs: []string{
		"element 1 (index 0): want a server id string or an object, not a number",
		"element 2 (index 1): server_id must be a string, not a number",
	}},
	{name: "json not an array", format: JSON, in: `{"server_id":"a"}`,
		probs: []string{"JSON input must be an array of server ids or objects, not an object"}},
	{name: "json bare string", format: JSON, in: `"a"`,
		probs: []string{"JSON input must be an array of server ids or objects, not a string"}},
	{name: "json wrong element types", format: JSON, in: `[1, null, true, ["a"]]`, probs: []string{
		"element 1 (index 0): want a server id string or an object, not a number",
		"element 2 (index 1): want a server id string or an object, not null",
		"element 3 (index 2): want a server id string or an object, not a boolean",
		"element 4 (index 3): want a server id string or an object, not an array",
	}},
	{name: "json server_id not a string", format: JSON, in: `[{"server_id":12}]`,
		probs: []string{"element 1 (index 0): server_id must be a string, not a number"}},
	{name: "json missing server_id", format: JSON, in: `[{"keypair_name":"kp"}, {"server_id": null}]`, probs: []string{
		"element 1 (index 0): object has no server_id",
		"element 2 (index 1): object has no server_id",
	}},
	{name: "json field errors", format: JSON, in: `[{"server_id":"a","server_id":"b"}, {"Server_ID":"c"}, {"keypair_name":["x"],"server_id":"d"}, {"server_id":{"x":[1]}}, {"server_id":"e","keypair_name":false}]`,
		probs: []string{
			"element 1 (index 0): field server_id given twice",
			`element 2 (index 1): unknown field "Server_ID"`,
			"element 3 (index 2): keypair_name must be a string, not an array",
			"element 4 (index 3): server_id must be a string, not an object",
			"element 5 (index 4): keypair_name must be a string, not a boolean",
		}},
	{name: "json nested array element skipped", format: JSON, in: `[[["a"], {"b": []}], "c"]`,
		probs: []string{"element 1 (index 0): want a server id string or an object, not an array"}},
	{name: "json bad object syntax", format: JSON, in: `["a", {"server_id" "b"}]`,
		probs: []string{"element 2 (index 1): malformed JSON after byte 4: invalid character '\"' after object key"}},
	{name: "json missing comma", format: JSON, in: `["a" "b"]`,
		probs: []string{"element 2 (index 1): malformed JSON after byte 5: invalid character '\"' after array element"}},
	{name: "json bad value", format: JSON, in: `["a", x]`,
		probs: []string{"element 2 (index 1): malformed JSON after byte 4: invalid character 'x' looking for beginning of value"}},
	{name: "json unterminated", format: JSON, in: `["a", "b"`,
		probs: []string{"malformed JSON after byte 9: input ends inside the array"}},
	{name: "json unterminated string", format: JSON, in: `["a", "b`,
		probs: []string{"element 2 (index 1): malformed JSON after byte 4: input ends inside the array"}},
	{name: "json trailing data", format: JSON, in: `["a"] ["b"]`,
		probs: []string{"unexpected data after the JSON array, which ends at byte 5"}},
	{name: "json empty array", format: JSON, in: " [ ] \n", probs: []string{"no targets in input"}},
	{name: "json empty input", format: JSON, in: "", probs: []string{"no targets in input"}},
	{name: "json string not trimmed", format: JSON, in: `[" a"]`, probs: []string{`element 1 (index 0): server id " a" contains a space`}},
	{name: "json duplicate", format: JSON, in: `["a", {"server_id":"a","keypair_name":"kp"}]`,
		probs: []string{`element 2 (index 1): duplicate server id "a" (first on element 1)`}},
	{name: "json bad keypair", format: JSON, in: `[{"server_id":"a","keypair_name":"kp/1"}]`,
		probs: []string{`element 1 (index 0): keypair name "kp/1" contains '/'; only letters, digits, '-' and '_' are allowed`}},
	{name: "json escaped id", format: JSON, in: `["a\u0062c"]`, want: ids("abc")},

	// Auto
	{name: "auto lines", format: Auto, in: "# ids\n" + hexID + "\n", want: ids(hexID)},
	{name: "auto csv", format: Auto, in: "\xef\xbb\xbf# ids\r\n\r\nkeypair_name,server_id\r\nkp," + hexID + "\r\n",
		want: []Target{{ServerID: hexID, KeypairName: "kp"}}},
	{name: "auto json", format: Auto, in: "\xef\xbb\xbf\n  [\"" + hexID + "\"]", want: ids(hexID)},
}

func TestParse(t *testing.T) {
	for _, tc := range parseCases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(strings.NewReader(tc.in), tc.format)
			if tc.probs == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("Parse = %q, want %q", got, tc.want)
				}
				return
			}
			if got != nil {
				t.Errorf("Parse returned targets %q with an error", got)
			}
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("Parse error = %v (%T), want *InputError", err, err)
			}
			var probs []string
			for _, p := range ie.Problems {
				probs = append(probs, p.String())
			}
			if !slices.Equal(probs, tc.probs) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(probs, "\n"), strings.Join(tc.probs, "\n"))
			}
			if ie.Omitted != tc.omitted {
				t.Errorf("Omitted = %d, want %d", ie.Omitted, tc.omitted)
			}
		})
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Format
	}{
		{"", Lines},
		{hexID + "\n", Lines},
		{"# header below\n\n" + hexID, Lines},
		{"server_id\n" + hexID, CSV},
		{" SERVER_ID \r\n" + hexID, CSV},
		{`"server_id"` + "\n" + hexID, CSV},
		{"#c\nname,server_id\nx," + hexID, CSV},
		{"\"server_id\",\"keypair_name\"\n", CSV},
		{"server_id_1\n", Lines}, // an id that merely contains the word
		{"  \n\t[\"a\"]", JSON},
		{"[", JSON},
		{"# [\"a\"]\n", Lines},
		{"#" + longLine + "\nserver_id\n", Lines}, // header beyond the detection window
	} {
		br := bufioReader(tc.in)
		got, err := detect(br)
		if err != nil || got != tc.want {
			t.Errorf("detect(%.40q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if rest, _ := io.ReadAll(br); string(rest) != tc.in {
			t.Errorf("detect(%.40q) consumed input", tc.in)
		}
	}
}

func TestParseReadError(t *testing.T) {
	boom := errors.New("boom")
	// Inputs valid so far, so that the read error is the first thing wrong.
	for f, ins := range map[Format][]string{
		Auto:  {"", "a\nb\n", "server_id\na\n", `["a",`},
		Lines: {"", "a\nb\n"},
		CSV:   {"", "server_id\na\n"},
		JSON:  {"", `["a",`},
	} {
		for _, in := range ins {
			r := io.MultiReader(strings.NewReader(in), iotest.ErrReader(boom))
			got, err := Parse(r, f)
			var ie *InputError
			if !errors.Is(err, boom) || errors.As(err, &ie) || got != nil {
				t.Errorf("Parse(%q then error, %v) = %q, %v; want a read error wrapping boom", in, f, got, err)
			}
		}
	}
}

func TestParseUnknownFormat(t *testing.T) {
	if _, err := Parse(strings.NewReader("a\n"), Format(9)); err == nil || !strings.Contains(err.Error(), "Format(9)") {
		t.Errorf("Parse with Format(9): err = %v", err)
	}
}

func TestParseFormat(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Format
		ok   bool
	}{
		{"auto", Auto, true}, {"lines", Lines, true}, {"csv", CSV, true}, {"json", JSON, true}, {"JSON", JSON, true},
		{"", Auto, false}, {"txt", Auto, false}, {"jsonl", Auto, false},
	} {
		got, err := ParseFormat(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseFormat(%q) = %v, %v; want %v, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if tc.ok && got.String() != strings.ToLower(tc.in) {
			t.Errorf("%v.String() = %q", got, got.String())
		}
	}
	var f Format
	if err := f.Set("csv"); err != nil || f != CSV {
		t.Errorf("Set(csv): f = %v, err = %v", f, err)
	}
	if err := f.Set("xml"); err == nil || f != CSV {
		t.Errorf("Set(xml): f = %v, err = %v; want an error and f unchanged", f, err)
	}
}

func TestInputErrorMessage(t *testing.T) {
	e := &InputError{Problems: []Problem{
		{Line: 7, Msg: `server id "abc def" contains a space`},
		{Element: 3, Msg: "object has no server_id"},
		{Msg: "no targets in input"},
	}, Omitted: 4}
	want := "line 7: server id \"abc def\" contains a space\n" +
		"element 3 (index 2): object has no server_id\n" +
		"no targets in input\n" +
		"and 4 more"
	if got := e.Error(); got != want {
		t.Errorf("Error() =\n%s\nwant\n%s", got, want)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name, s string
		check   func(string) error
		ok      bool
	}{
		{"hex id", hexID, ValidateServerID, true},
		{"uuid id", uuidID, ValidateServerID, false}, // 36 bytes: over the API's 32
		{"32 bytes", strings.Repeat("z", 32), ValidateServerID, true},
		{"empty id", "", ValidateServerID, false},
		{"dot in id", "a.b", ValidateServerID, false},
		{"keypair 64 bytes", strings.Repeat("k", 64), ValidateKeypairName, true},
		{"keypair 65 bytes", strings.Repeat("k", 65), ValidateKeypairName, false},
		{"keypair dash underscore", "KeyPair-1230_x", ValidateKeypairName, true},
		{"empty keypair", "", ValidateKeypairName, false},
		{"keypair newline", "kp\n", ValidateKeypairName, false},
	} {
		if err := tc.check(tc.s); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
