package targets_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cph-rekey/cph-rekey/internal/targets"
)

func ExampleParse() {
	in := `server_id,keypair_name
ae4d231e44d2a4ccf612660a473fe1e3,
2347275010d3440d963d3fcb8931ff55,kp-canary
`
	ts, err := targets.Parse(strings.NewReader(in), targets.Auto)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range ts {
		fmt.Printf("%s %q\n", t.ServerID, t.KeypairName)
	}
	// Output:
	// ae4d231e44d2a4ccf612660a473fe1e3 ""
	// 2347275010d3440d963d3fcb8931ff55 "kp-canary"
}

func ExampleInputError() {
	in := "ae4d231e44d2a4ccf612660a473fe1e3\nabc def\nae4d231e44d2a4ccf612660a473fe1e3\n"
	_, err := targets.Parse(strings.NewReader(in), targets.Lines)
	var ie *targets.InputError
	if errors.As(err, &ie) {
		fmt.Println(ie) // a CLI prints this and exits 2
	}
	// Output:
	// line 2: server id "abc def" contains a space
	// line 3: duplicate server id "ae4d231e44d2a4ccf612660a473fe1e3" (first on line 1)
}
