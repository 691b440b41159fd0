package cphsim_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

func TestLoadFleet(t *testing.T) {
	want := []cph.Server{
		{ServerID: "a1", ServerName: "one", KeypairName: "kp", Status: 5, CreateTime: "2025-01-01T00:00:00Z"},
		{ServerID: "b2", Status: 10},
	}
	tests := []struct {
		name, file, content string
		want                []cph.Server
		err                 string
	}{
		{"csv", "f.csv", "server_id,server_name,keypair_name,status,create_time\na1,one,kp,,2025-01-01T00:00:00Z\nb2,,,10,\n", want, ""},
		{"csv ids only", "f.CSV", "\ufeffserver_id\na1\nb2\n", []cph.Server{{ServerID: "a1", Status: 5}, {ServerID: "b2", Status: 5}}, ""},
		{"json array", "f.json", `[{"server_id":"a1","server_name":"one","keypair_name":"kp","create_time":"2025-01-01T00:00:00Z"},{"server_id":"b2","status":10}]`, want, ""},
		{"json page", "f.json", `{"count":2,"servers":[{"server_id":"a1","server_name":"one","keypair_name":"kp","status":5,"create_time":"2025-01-01T00:00:00Z"},{"server_id":"b2","status":10}]}`, want, ""},
		{"csv unknown column", "f.csv", "server_id,colour\na,b\n", nil, `line 1: unknown column "colour"`},
		{"csv no id column", "f.csv", "server_name\na\n", nil, "no server_id column"},
		{"csv bad status", "f.csv", "server_id,status\na,5\nb,up\n", nil, `line 3: status "up" is not an integer`},
		{"csv short row", "f.csv", "server_id,status\na\n", nil, "line 2"},
		{"csv empty", "f.csv", "", nil, "no header"},
		{"json broken", "f.json", `[{"server_id":`, nil, "parse JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), tt.file)
			if err := os.WriteFile(path, []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := cphsim.LoadFleet(path)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) || !strings.Contains(err.Error(), path) {
					t.Fatalf("error %v, want one naming %s and %q", err, path, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
	if _, err := cphsim.LoadFleet(filepath.Join(t.TempDir(), "missing.csv")); err == nil {
		t.Error("missing file loaded")
	}
}
