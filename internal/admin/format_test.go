package admin

import (
	"strconv"
	"strings"
	"testing"
)

func TestFormatJSON(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"submit payload", `{"rotation":"r-1","chunk":12,"attempt":1,"servers":50}`,
			"{\n  \"attempt\": 1,\n  \"chunk\": 12,\n  \"rotation\": \"r-1\",\n  \"servers\": 50\n}"},
		{"big numbers kept exact", `{"n":12345678901234567890}`, "{\n  \"n\": 12345678901234567890\n}"},
		{"no HTML escaping", `{"msg":"a<b>&c"}`, "{\n  \"msg\": \"a<b>&c\"\n}"},
		{"empty", ``, ``},
		{"not JSON", `sk=abc`, `(6 bytes, not JSON: not shown)`},
		{"two values", `{} {"sk":"x"}`, `(13 bytes, not a single JSON value: not shown)`},
		{"scalar", `"hello"`, `"hello"`},
	}
	for _, tt := range tests {
		if got := FormatJSON("rotation:submit", []byte(tt.in)); got != tt.want {
			t.Errorf("%s: FormatJSON(%q) = %q, want %q", tt.name, tt.in, got, tt.want)
		}
	}
}

func TestFormatJSONRedacts(t *testing.T) {
	in := `{
		"rotation": "r-1",
		"sk": "S1", "SK": "S2", "userSK": "S3", "HUAWEICLOUD_SDK_SK": "S4", "ak": "S5",
		"secret_access_key": "S6", "SecurityToken": "S7", "password": "S8", "db_passwd": "S9",
		"credentials": {"nested": "S10"}, "Authorization": "S11", "api-key": "S12", "private_key": "S13",
		"nested": {"list": [{"token": "S14"}, {"keep": "fine"}]},
		"keypair_name": "kp-new", "task": "keep-task", "disk": "keep-disk", "sdk": "keep-sdk", "ask": "keep-ask",
		"counts": {"succeeded": 48, "failed": 2}
	}`
	got := FormatJSON("rotation:finished", []byte(in))
	for i := 1; i <= 14; i++ {
		secret := `"S` + strconv.Itoa(i) + `"`
		if strings.Contains(got, secret) {
			t.Errorf("FormatJSON shows %s:\n%s", secret, got)
		}
	}
	for _, keep := range []string{"r-1", "kp-new", "keep-task", "keep-disk", "keep-sdk", "keep-ask", "fine", `"succeeded": 48`} {
		if !strings.Contains(got, keep) {
			t.Errorf("FormatJSON lost %s:\n%s", keep, got)
		}
	}
	if n := strings.Count(got, Redacted); n != 14 {
		t.Errorf("%d fields redacted, want 14:\n%s", n, got)
	}
}

func TestWords(t *testing.T) {
	tests := []struct{ in, want string }{
		{"server_id", "server id"},
		{"serverID", "server id"},
		{"userSK", "user sk"},
		{"HUAWEICLOUD_SDK_SK", "huaweicloud sdk sk"},
		{"api-key.v2", "api key v2"},
		{"", ""},
	}
	for _, tt := range tests {
		if got := strings.Join(words(tt.in), " "); got != tt.want {
			t.Errorf("words(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
