package cph

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// Signing constants of the Huawei Cloud API gateway ("SDK-HMAC-SHA256").
const (
	// Algorithm names the signing scheme in the Authorization header.
	Algorithm = "SDK-HMAC-SHA256"
	// HeaderSdkDate carries the signing time, formatted with DateFormat.
	HeaderSdkDate = "X-Sdk-Date"
	// HeaderContentSha256 lets a client sign "UNSIGNED-PAYLOAD" instead of the body hash.
	HeaderContentSha256 = "X-Sdk-Content-Sha256"
	// HeaderSecurityToken carries the token of temporary AK/SK credentials.
	HeaderSecurityToken = "X-Security-Token"
	// HeaderAuthToken carries an IAM user token, the alternative to AK/SK signing.
	HeaderAuthToken = "X-Auth-Token"
	// HeaderProjectID names the project the request acts on.
	HeaderProjectID = "X-Project-Id"
	// DateFormat is the layout of X-Sdk-Date (UTC).
	DateFormat = "20060102T150405Z"
	// UnsignedPayload is the payload hash used when X-Sdk-Content-Sha256 says so.
	UnsignedPayload = "UNSIGNED-PAYLOAD"
)

// Signer signs HTTP requests with an access key (AK) and secret key (SK) the
// way the official Huawei Cloud SDK does. It never prints the SK.
type Signer struct {
	ak string
	sk []byte
}

// NewSigner returns a Signer for the key pair ak/sk.
func NewSigner(ak, sk string) *Signer {
	return &Signer{ak: ak, sk: []byte(sk)}
}

// AccessKey returns the AK the Signer signs with.
func (s *Signer) AccessKey() string { return s.ak }

// String redacts the secret key, so a Signer can be logged safely.
func (s *Signer) String() string { return "cph.Signer{AK:" + redact(s.ak) + ", SK:[redacted]}" }

// GoString redacts the secret key from %#v output too.
func (s *Signer) GoString() string { return s.String() }

// Sign sets X-Sdk-Date and Authorization on req. body must be the exact
// bytes that will be sent. Like the SDK, it signs every header already set
// on req except Content-Type and names containing "_".
func (s *Signer) Sign(req *http.Request, body []byte, now time.Time) {
	req.Header.Set(HeaderSdkDate, now.UTC().Format(DateFormat))
	signed := SignedHeaderNames(req.Header)
	creq := CanonicalRequest(req, signed, PayloadHash(req.Header, body))
	sig := Signature(s.sk, StringToSign(req.Header.Get(HeaderSdkDate), creq))
	req.Header.Set("Authorization", fmt.Sprintf("%s Access=%s, SignedHeaders=%s, Signature=%s",
		Algorithm, s.ak, strings.Join(signed, ";"), sig))
}

// SignedHeaderNames lists, lowercased and sorted, the headers the SDK signs:
// all of them except Content-Type and names that contain "_".
func SignedHeaderNames(h http.Header) []string {
	names := make([]string, 0, len(h))
	for name := range h {
		l := strings.ToLower(name)
		if strings.HasPrefix(l, "content-type") || strings.Contains(l, "_") || l == "authorization" {
			continue
		}
		names = append(names, l)
	}
	sort.Strings(names)
	return names
}

// PayloadHash returns the lowercase hex SHA-256 of body, or UNSIGNED-PAYLOAD
// when the request says so in X-Sdk-Content-Sha256.
func PayloadHash(h http.Header, body []byte) string {
	if h.Get(HeaderContentSha256) == UnsignedPayload {
		return UnsignedPayload
	}
	sum := sha256.Sum256(body)
	return hex.EncodeToString(sum[:])
}

// CanonicalRequest builds the canonical request of req over the given signed
// header names (lowercase). A "host" entry is read from req.Host (or req.URL.Host).
func CanonicalRequest(req *http.Request, signedHeaders []string, payloadHash string) string {
	var b strings.Builder
	b.WriteString(req.Method)
	b.WriteByte('\n')
	b.WriteString(CanonicalURI(req.URL.Path))
	b.WriteByte('\n')
	b.WriteString(CanonicalQuery(req.URL.RawQuery))
	b.WriteByte('\n')
	for _, name := range signedHeaders {
		b.WriteString(name)
		b.WriteByte(':')
		b.WriteString(strings.TrimSpace(headerValue(req, name)))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
	b.WriteString(strings.Join(signedHeaders, ";"))
	b.WriteByte('\n')
	b.WriteString(payloadHash)
	return b.String()
}

func headerValue(req *http.Request, name string) string {
	if name == "host" {
		if req.Host != "" {
			return req.Host
		}
		return req.URL.Host
	}
	return req.Header.Get(name)
}

// CanonicalURI encodes each path segment and ends the result with "/", as
// the gateway requires for signing (the request itself need not end in "/").
func CanonicalURI(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		segs[i] = Escape(s)
	}
	p := strings.Join(segs, "/")
	if !strings.HasSuffix(p, "/") {
		p += "/"
	}
	return p
}

// CanonicalQuery parses rawQuery and re-encodes it canonically: names and
// values escaped with Escape, sorted by name then value, "name=value" joined
// by "&". An unparsable query canonicalises its parsable part; the signature
// check then fails instead of the parser panicking.
func CanonicalQuery(rawQuery string) string {
	values, _ := url.ParseQuery(rawQuery)
	return EncodeQuery(values)
}

// EncodeQuery encodes values canonically (see CanonicalQuery). A client that
// sends exactly this string signs exactly what it sends.
func EncodeQuery(values url.Values) string {
	if len(values) == 0 {
		return ""
	}
	names := make([]string, 0, len(values))
	for k := range values {
		names = append(names, k)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, k := range names {
		vs := append([]string(nil), values[k]...)
		sort.Strings(vs)
		for _, v := range vs {
			if b.Len() > 0 {
				b.WriteByte('&')
			}
			b.WriteString(Escape(k))
			b.WriteByte('=')
			b.WriteString(Escape(v))
		}
	}
	return b.String()
}

// Escape percent-encodes s keeping only RFC 3986 unreserved characters
// (A-Z a-z 0-9 - _ . ~), with uppercase hex, as the gateway does.
func Escape(s string) string {
	const hexdigits = "0123456789ABCDEF"
	n := 0
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			n++
		}
	}
	if n == 0 {
		return s
	}
	out := make([]byte, 0, len(s)+2*n)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			out = append(out, c)
			continue
		}
		out = append(out, '%', hexdigits[c>>4], hexdigits[c&15])
	}
	return string(out)
}

func unreserved(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '-' || c == '_' || c == '.' || c == '~'
}

// StringToSign hashes the canonical request into the string that is signed.
func StringToSign(sdkDate, canonicalRequest string) string {
	sum := sha256.Sum256([]byte(canonicalRequest))
	return Algorithm + "\n" + sdkDate + "\n" + hex.EncodeToString(sum[:])
}

// Signature is the lowercase hex HMAC-SHA256 of stringToSign keyed by sk.
func Signature(sk []byte, stringToSign string) string {
	m := hmac.New(sha256.New, sk)
	m.Write([]byte(stringToSign))
	return hex.EncodeToString(m.Sum(nil))
}

// Authorization is a parsed "SDK-HMAC-SHA256 Access=…, SignedHeaders=…,
// Signature=…" header.
type Authorization struct {
	Access        string
	SignedHeaders []string
	Signature     string
}

// ErrMalformedAuthorization is returned by ParseAuthorization for a header
// that is not a well-formed SDK-HMAC-SHA256 authorization.
var ErrMalformedAuthorization = errors.New("malformed SDK-HMAC-SHA256 authorization")

// ParseAuthorization parses an Authorization header value.
func ParseAuthorization(v string) (Authorization, error) {
	var a Authorization
	rest, ok := strings.CutPrefix(v, Algorithm+" ")
	if !ok {
		return a, ErrMalformedAuthorization
	}
	for _, part := range strings.Split(rest, ",") {
		k, val, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, ErrMalformedAuthorization
		}
		switch k {
		case "Access":
			a.Access = val
		case "SignedHeaders":
			if val != "" {
				a.SignedHeaders = strings.Split(val, ";")
			}
		case "Signature":
			a.Signature = val
		}
	}
	if a.Access == "" || a.Signature == "" || len(a.SignedHeaders) == 0 {
		return a, ErrMalformedAuthorization
	}
	return a, nil
}

// redact keeps the first four characters of an access key, the part the
// console also shows, and hides the rest.
func redact(ak string) string {
	if len(ak) <= 4 {
		return "****"
	}
	return ak[:4] + "****"
}
