package cph

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func mustDate(t *testing.T, s string) time.Time {
	t.Helper()
	d, err := time.Parse(DateFormat, s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Vector A is the worked example of the official signing guide.
func TestSignVectorA(t *testing.T) {
	req, _ := http.NewRequest("GET", "https://service.region.example.com/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs?limit=2&marker=13551d6b-755d-4757-b956-536f674975c0", nil)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderSdkDate, "20191115T033655Z")
	signed := []string{"content-type", "host", "x-sdk-date"}
	creq := CanonicalRequest(req, signed, PayloadHash(req.Header, nil))
	want := "GET\n/v1/77b6a44cba5143ab91d13ab9a8ff44fd/vpcs/\nlimit=2&marker=13551d6b-755d-4757-b956-536f674975c0\n" +
		"content-type:application/json\nhost:service.region.example.com\nx-sdk-date:20191115T033655Z\n\n" +
		"content-type;host;x-sdk-date\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	if creq != want {
		t.Fatalf("canonical request:\n%q\nwant\n%q", creq, want)
	}
	sts := StringToSign("20191115T033655Z", creq)
	if wantSTS := "SDK-HMAC-SHA256\n20191115T033655Z\nb25362e603ee30f4f25e7858e8a7160fd36e803bb2dfe206278659d71a9bcd7a"; sts != wantSTS {
		t.Fatalf("string to sign %q, want %q", sts, wantSTS)
	}
	sig := Signature([]byte("MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc"), sts)
	if want := "7be6668032f70418fcc22abc52071e57aff61b84a1d2381bb430d6870f4f6ebe"; sig != want {
		t.Fatalf("signature %s, want %s", sig, want)
	}
}

// Vectors B and C come from the Go SDK's signer tests.
func TestSignSDKVectors(t *testing.T) {
	tests := []struct {
		name, method, url, body, contentType string
		wantSig                              string
	}{
		{name: "B GET", method: "GET", url: "https://example.huaweicloud.com/path?limit=1",
			wantSig: "5a2ce64c865e0e6046321c6f3d5a77ba8413eeaf355c3166c03d58d02ac79624"},
		{name: "C POST", method: "POST", url: "https://example.huaweicloud.com/path?key=value",
			body: "{\"Name\":\"test\",\"Id\":1}\n", contentType: "application/json",
			wantSig: "cecc2af119b18ab70b4d094c0750f3b42c02f254903179a0fc2cc72fc9db4f59"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, tt.url, strings.NewReader(tt.body))
			req.Header["TEST_UNDERSCORE"] = []string{"TEST_VALUE"}
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			NewSigner("AccessKey", "SecretKey").Sign(req, []byte(tt.body), mustDate(t, "20060102T150405Z"))
			want := fmt.Sprintf("SDK-HMAC-SHA256 Access=AccessKey, SignedHeaders=x-sdk-date, Signature=%s", tt.wantSig)
			if got := req.Header.Get("Authorization"); got != want {
				t.Fatalf("Authorization\n got %s\nwant %s", got, want)
			}
		})
	}
}

func TestCanonicalQuery(t *testing.T) {
	v := url.Values{
		"test":   {"一 (&=?!#%.*)"},
		"path":   {"/tmp/123"},
		"multi":  {"3", "1", "2"},
		"limit":  {"1"},
		"enable": {"true"},
	}
	want := "enable=true&limit=1&multi=1&multi=2&multi=3&path=%2Ftmp%2F123&test=%E4%B8%80%20%28%26%3D%3F%21%23%25.%2A%29"
	if got := EncodeQuery(v); got != want {
		t.Fatalf("EncodeQuery\n got %s\nwant %s", got, want)
	}
	if got := CanonicalQuery(v.Encode()); got != want {
		t.Fatalf("CanonicalQuery(url.Values.Encode)\n got %s\nwant %s", got, want)
	}
	if got := CanonicalQuery("request_ids=a%2Cb&offset=0&limit=100"); got != "limit=100&offset=0&request_ids=a%2Cb" {
		t.Fatalf("CanonicalQuery(request_ids) = %s", got)
	}
}

func TestCanonicalURI(t *testing.T) {
	tests := map[string]string{
		"":                                      "/",
		"/":                                     "/",
		"/v1/p/cloud-phone/servers/open-access": "/v1/p/cloud-phone/servers/open-access/",
		"/v1/p/jobs/":                           "/v1/p/jobs/",
		"/a b/ü":                                "/a%20b/%C3%BC/",
	}
	for in, want := range tests {
		if got := CanonicalURI(in); got != want {
			t.Errorf("CanonicalURI(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSignerNeverPrintsSecret(t *testing.T) {
	s := NewSigner("QTWAOYTTINDUT2QVKYUC", "MFyfvK41ba2giqM7Uio6PznpdUKGpownRZlmVmHc")
	for _, out := range []string{fmt.Sprint(s), fmt.Sprintf("%v %+v %#v %s", s, s, s, s)} {
		if strings.Contains(out, "MFyfvK41") || strings.Contains(out, "QTWAOYTTINDUT2QVKYUC") {
			t.Fatalf("secret printed: %s", out)
		}
	}
}

func TestParseAuthorization(t *testing.T) {
	a, err := ParseAuthorization("SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=abc")
	if err != nil || a.Access != "AK" || strings.Join(a.SignedHeaders, ";") != "host;x-sdk-date" || a.Signature != "abc" {
		t.Fatalf("got %+v, %v", a, err)
	}
	for _, bad := range []string{"", "Bearer x", "SDK-HMAC-SHA256 ", "SDK-HMAC-SHA256 Access=AK", "SDK-HMAC-SHA256 Access=AK, Signature"} {
		if _, err := ParseAuthorization(bad); err == nil {
			t.Errorf("ParseAuthorization(%q) succeeded", bad)
		}
	}
}

func FuzzCanonicalise(f *testing.F) {
	f.Add("/v1/p/cloud-phone/jobs", "request_ids=a%2Cb&limit=100", []byte("{}\n"))
	f.Add("/a b/%zz", "x=%zz&&=&y", []byte(nil))
	f.Add("", "test=%E4%B8%80%20%28", []byte("\x00"))
	f.Fuzz(func(t *testing.T, path, rawQuery string, body []byte) {
		req := &http.Request{Method: "PUT", URL: &url.URL{Path: path, RawQuery: rawQuery}, Host: "h", Header: http.Header{}}
		NewSigner("ak", "sk").Sign(req, body, time.Unix(0, 0))
		if !strings.HasSuffix(CanonicalURI(path), "/") {
			t.Fatalf("canonical URI of %q does not end in /", path)
		}
		// Canonicalising is idempotent: a client that sends the canonical
		// query signs the same string the gateway recomputes.
		q := CanonicalQuery(rawQuery)
		if again := CanonicalQuery(q); again != q {
			t.Fatalf("CanonicalQuery not idempotent: %q -> %q", q, again)
		}
		a, err := ParseAuthorization(req.Header.Get("Authorization"))
		if err != nil || a.SignedHeaders[len(a.SignedHeaders)-1] != "x-sdk-date" {
			t.Fatalf("Sign produced an authorization that does not parse: %v", err)
		}
	})
}
