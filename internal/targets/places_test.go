package targets

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const (
	projA = "0123456789abcdef0123456789abcdef"
	projB = "fedcba9876543210fedcba9876543210"
)

func TestReadPlaces(t *testing.T) {
	opts := Options{Region: "cn-north-4", ProjectID: projA}
	at := func(id, region, project string) Target {
		return Target{ServerID: id, Region: region, ProjectID: project}
	}
	tests := []struct {
		name  string
		opts  Options
		in    string
		want  []Target
		probs []string
	}{
		{name: "lines take the defaults", opts: opts, in: hexID + "\n",
			want: []Target{at(hexID, "cn-north-4", projA)}},
		{name: "no defaults leave the place empty", in: "server_id,region\n" + hexID + ",\n",
			want: []Target{at(hexID, "", "")}},
		{name: "CSV columns in any order, empty cells default", opts: opts,
			in:   "project_id,server_id,region\n" + projB + "," + hexID + ",cn-east-3\n," + hexID + ",\n" + projB + "," + hexID + ",\n",
			want: []Target{at(hexID, "cn-east-3", projB), at(hexID, "cn-north-4", projA), at(hexID, "cn-north-4", projB)}},
		{name: "JSON fields", opts: opts,
			in:   `[{"server_id":"` + hexID + `","region":"ap-southeast-1","project_id":"` + projB + `"},{"server_id":"` + hexID + `","region":null}]`,
			want: []Target{at(hexID, "ap-southeast-1", projB), at(hexID, "cn-north-4", projA)}},
		{name: "unknown region names the known ones", opts: Options{Regions: []string{"cn-east-3", "cn-north-4"}},
			in:    "server_id,region\n" + hexID + ",cn-nowhere-1\n",
			probs: []string{`line 2: unknown region "cn-nowhere-1" (known: cn-east-3, cn-north-4; another needs an endpoint: --endpoint cn-nowhere-1=URL or HUAWEICLOUD_SDK_REGION_CPH_CN_NOWHERE_1)`}},
		{name: "project id not hex", opts: opts, in: "server_id,project_id\n" + hexID + ",cn-north-4_sub\n",
			probs: []string{`line 2: project id "cn-north-4_sub" is not 32 hex digits`}},
		{name: "project id too short", opts: opts, in: `[{"server_id":"` + hexID + `","project_id":"abc"}]`,
			probs: []string{`element 1 (index 0): project id "abc" is not 32 hex digits`}},
		{name: "a default spelled out is the same place", opts: opts,
			in:    "server_id,region,project_id\n" + hexID + ",,\n" + hexID + ",cn-north-4," + projA + "\n",
			probs: []string{`line 3: duplicate server id "` + hexID + `" in cn-north-4/` + projA + ` (first on line 2)`}},
		{name: "region field must be a string", opts: opts, in: `[{"server_id":"` + hexID + `","region":4}]`,
			probs: []string{`element 1 (index 0): region must be a string, not a number`}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Read(strings.NewReader(tc.in), tc.opts)
			if tc.probs == nil {
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
				if !slices.Equal(got, tc.want) {
					t.Fatalf("Read = %+v, want %+v", got, tc.want)
				}
				return
			}
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("Read error = %v, want *InputError", err)
			}
			var probs []string
			for _, p := range ie.Problems {
				probs = append(probs, p.String())
			}
			if !slices.Equal(probs, tc.probs) {
				t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(probs, "\n"), strings.Join(tc.probs, "\n"))
			}
		})
	}
}

func TestValidateProjectID(t *testing.T) {
	for id, ok := range map[string]bool{projA: true, strings.ToUpper(projB): true, "": false, projA + "0": false, "g" + projA[1:]: false} {
		if err := ValidateProjectID(id); (err == nil) != ok {
			t.Errorf("ValidateProjectID(%q) = %v, want ok %t", id, err, ok)
		}
	}
}
