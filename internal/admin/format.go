package admin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"unicode"
)

// Redacted replaces the value of a sensitive field in the web UI.
const Redacted = "[redacted]"

// FormatJSON renders a task's payload or result for the web UI as indented
// JSON, with the value of every field whose name looks like a credential
// replaced by Redacted. Payloads carry no credentials by contract; this is
// the second line of defence, so anything that is not JSON is not shown.
// It has asynqmon's formatter signature (taskType is unused).
func FormatJSON(taskType string, data []byte) string {
	if len(bytes.TrimSpace(data)) == 0 {
		return ""
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return fmt.Sprintf("(%d bytes, not JSON: not shown)", len(data))
	}
	if _, err := dec.Token(); err != io.EOF {
		return fmt.Sprintf("(%d bytes, not a single JSON value: not shown)", len(data))
	}
	var b strings.Builder
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(redact(v)); err != nil {
		return fmt.Sprintf("(%d bytes: %v)", len(data), err)
	}
	return strings.TrimSuffix(b.String(), "\n")
}

func redact(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if sensitive(k) {
				v[k] = Redacted
			} else {
				v[k] = redact(e)
			}
		}
	case []any:
		for i, e := range v {
			v[i] = redact(e)
		}
	}
	return v
}

// sensitiveParts mark a credential wherever they appear in a field name,
// compared in lower case without separators.
var sensitiveParts = []string{"secret", "token", "password", "passwd", "credential", "authorization", "apikey", "accesskey", "privatekey"}

// sensitiveWords mark a credential only as a whole word of a field name
// ("sk", "userSK", "HUAWEICLOUD_SDK_SK"), since as substrings they are in
// harmless names such as "task" and "disk".
var sensitiveWords = map[string]bool{"sk": true, "ak": true}

func sensitive(name string) bool {
	var flat strings.Builder
	for _, r := range name {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			flat.WriteRune(unicode.ToLower(r))
		}
	}
	for _, p := range sensitiveParts {
		if strings.Contains(flat.String(), p) {
			return true
		}
	}
	for _, w := range words(name) {
		if sensitiveWords[w] {
			return true
		}
	}
	return false
}

// words splits a field name at separators and lower-to-upper case changes,
// in lower case: "server_id" and "serverID" give "server", "id".
func words(name string) []string {
	var out []string
	var cur []rune
	flush := func() {
		if len(cur) > 0 {
			out = append(out, strings.ToLower(string(cur)))
			cur = cur[:0]
		}
	}
	prevLower := false
	for _, r := range name {
		switch {
		case !unicode.IsLetter(r) && !unicode.IsDigit(r):
			flush()
			prevLower = false
			continue
		case unicode.IsUpper(r) && prevLower:
			flush()
		}
		cur = append(cur, r)
		prevLower = unicode.IsLower(r) || unicode.IsDigit(r)
	}
	flush()
	return out
}
