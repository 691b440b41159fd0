package targets

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzParse checks that no input makes Parse panic, that bad input is
// always a well-formed *InputError, and that accepted input only yields
// valid targets, unique in each (region, project). Its seeds (every TestParse case) run in the normal
// suite.
func FuzzParse(f *testing.F) {
	for _, tc := range parseCases {
		for _, format := range []Format{tc.format, Auto} {
			f.Add([]byte(tc.in), uint8(format))
		}
	}
	f.Fuzz(func(t *testing.T, in []byte, format uint8) {
		got, err := Parse(bytes.NewReader(in), Format(format%4))
		if err != nil {
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("Parse: %v (%T), want an *InputError: a bytes.Reader cannot fail", err, err)
			}
			if got != nil {
				t.Errorf("Parse returned %d targets with an error", len(got))
			}
			if n := len(ie.Problems); n == 0 || n > MaxProblems {
				t.Fatalf("InputError has %d problems, want 1..%d", n, MaxProblems)
			}
			for i, p := range ie.Problems {
				if p.Msg == "" || p.Line < 0 || p.Element < 0 || p.Line > 0 && p.Element > 0 {
					t.Errorf("bad problem %+v", p)
				}
				if i > 0 && p.pos() < ie.Problems[i-1].pos() {
					t.Errorf("problems out of input order: %v", ie)
				}
			}
			return
		}
		if len(got) == 0 {
			t.Fatal("Parse accepted input without targets")
		}
		seen := make(map[string]bool, len(got))
		for _, tg := range got {
			if err := ValidateServerID(tg.ServerID); err != nil {
				t.Errorf("accepted target: %v", err)
			}
			if tg.KeypairName != "" {
				if err := ValidateKeypairName(tg.KeypairName); err != nil {
					t.Errorf("accepted target: %v", err)
				}
			}
			if tg.ProjectID != "" {
				if err := ValidateProjectID(tg.ProjectID); err != nil {
					t.Errorf("accepted target: %v", err)
				}
			}
			key := tg.Region + "/" + tg.ProjectID + "/" + tg.ServerID
			if seen[key] {
				t.Errorf("accepted duplicate server id %q in %q/%q", tg.ServerID, tg.Region, tg.ProjectID)
			}
			seen[key] = true
		}
	})
}
