package targets

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits from the CPH API: server_id "不得超过32个字节" (at most 32 bytes) and
// keypair_name at most 64 bytes.
const (
	MaxServerIDBytes    = 32
	MaxKeypairNameBytes = 64
)

// ValidateServerID reports why id cannot be a CPH server id: it must be
// 1–32 bytes of letters, digits, '-' and '_'. Ids are 32 hex digits today,
// but the shape is not checked further (an old API example shows a UUID);
// whether a server exists is the API's business. A dashed UUID is 36 bytes,
// over the limit UpdateKeypair documents, so it is rejected here rather than
// by every chunk that carries it.
func ValidateServerID(id string) error {
	return check("server id", id, MaxServerIDBytes)
}

// ValidateKeypairName reports why name cannot be a keypair name: it must be
// 1–64 bytes of letters, digits, '-' and '_', the rule of Huawei Cloud key
// pairs (KPS).
func ValidateKeypairName(name string) error {
	return check("keypair name", name, MaxKeypairNameBytes)
}

// ValidateProjectID reports why id cannot be a project id: IAM's ids are
// 32 hex digits.
func ValidateProjectID(id string) error {
	if len(id) != 32 || strings.Trim(strings.ToLower(id), "0123456789abcdef") != "" {
		return fmt.Errorf("project id %s is not 32 hex digits", quote(id))
	}
	return nil
}

func check(what, s string, maxBytes int) error {
	if s == "" {
		return fmt.Errorf("empty %s", what)
	}
	if why := badChar(s); why != "" {
		return fmt.Errorf("%s %s %s", what, quote(s), why)
	}
	if len(s) > maxBytes {
		return fmt.Errorf("%s %s is %d bytes, longer than %d", what, quote(s), len(s), maxBytes)
	}
	return nil
}

// badChar describes the first character of s outside [A-Za-z0-9_-], or
// returns "".
func badChar(s string) string {
	for i := 0; i < len(s); {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_' {
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return fmt.Sprintf("contains invalid UTF-8 byte 0x%02x", c)
		case r == ' ':
			return "contains a space"
		case r == '\t':
			return "contains a tab"
		case unicode.IsSpace(r):
			return fmt.Sprintf("contains whitespace %U", r)
		case unicode.IsControl(r):
			return fmt.Sprintf("contains control character %U", r)
		}
		return fmt.Sprintf("contains %q; only letters, digits, '-' and '_' are allowed", r)
	}
	return ""
}

// quote quotes s for a message, shortened so that a line of garbage does
// not become a screenful of error.
func quote(s string) string {
	const show = 40
	if len(s) <= show {
		return fmt.Sprintf("%q", s)
	}
	return fmt.Sprintf("%q…", s[:show])
}
