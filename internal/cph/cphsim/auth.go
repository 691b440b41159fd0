package cphsim

import (
	"crypto/subtle"
	"net/http"
	"slices"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// maxSkew is how far X-Sdk-Date may be from the gateway's clock.
const maxSkew = 15 * time.Minute

// Gateway authentication messages (error_code APIGW.0301 unless noted).
const (
	msgSignatureFail = "Incorrect IAM authentication information: verify aksk signature fail"
	msgTokenFail     = "Incorrect IAM authentication information: decrypt token fail"
	msgNoAuth        = "Incorrect IAM authentication information: x-auth-token not found"
	msgSecurityToken = "Incorrect IAM authentication information: verify security token fail"
	// APIGW.0303, as the gateway's FAQ shows for a skewed X-Sdk-Date.
	msgDateMissing = "Incorrect IAM authentication information: x-sdk-date not found"
	msgDateInvalid = "Incorrect IAM authentication information: x-sdk-date is not in the format YYYYMMDDTHHMMSSZ"
	msgDateSkew    = "Incorrect IAM authentication information: x-sdk-date differs from the server time by more than 15 minutes"
)

// authenticate checks r as the API gateway does: an X-Auth-Token when no
// Authorization is sent, else an SDK-HMAC-SHA256 signature recomputed over
// exactly the headers the request names in SignedHeaders (host from the
// Host header) and the raw body, or UNSIGNED-PAYLOAD when
// X-Sdk-Content-Sha256 says so. x-sdk-date must be among the signed headers,
// so a captured request cannot be replayed under a fresh date.
func (s *Sim) authenticate(r *http.Request, body []byte, at time.Time) *apiError {
	authz := r.Header.Get("Authorization")
	if authz == "" {
		tok := r.Header.Get(cph.HeaderAuthToken)
		switch {
		case tok == "":
			return unauthorized("APIGW.0301", msgNoAuth)
		case s.opts.AuthToken == "" || subtle.ConstantTimeCompare([]byte(tok), []byte(s.opts.AuthToken)) != 1:
			return unauthorized("APIGW.0301", msgTokenFail)
		}
		return nil
	}
	a, err := cph.ParseAuthorization(authz)
	if err != nil || s.opts.AccessKey == "" || subtle.ConstantTimeCompare([]byte(a.Access), []byte(s.opts.AccessKey)) != 1 {
		return unauthorized("APIGW.0301", msgSignatureFail)
	}
	date := r.Header.Get(cph.HeaderSdkDate)
	if date == "" {
		return unauthorized("APIGW.0303", msgDateMissing)
	}
	signedAt, err := time.Parse(cph.DateFormat, date)
	if err != nil {
		return unauthorized("APIGW.0303", msgDateInvalid)
	}
	if d := at.Sub(signedAt); d > maxSkew || d < -maxSkew {
		return unauthorized("APIGW.0303", msgDateSkew)
	}
	if !slices.Contains(a.SignedHeaders, "x-sdk-date") {
		return unauthorized("APIGW.0301", msgSignatureFail)
	}
	creq := cph.CanonicalRequest(r, a.SignedHeaders, cph.PayloadHash(r.Header, body))
	want := cph.Signature([]byte(s.opts.SecretKey), cph.StringToSign(date, creq))
	if subtle.ConstantTimeCompare([]byte(want), []byte(a.Signature)) != 1 {
		return unauthorized("APIGW.0301", msgSignatureFail)
	}
	if s.opts.SecurityToken != "" &&
		subtle.ConstantTimeCompare([]byte(r.Header.Get(cph.HeaderSecurityToken)), []byte(s.opts.SecurityToken)) != 1 {
		return unauthorized("APIGW.0301", msgSecurityToken)
	}
	return nil
}

func unauthorized(code, msg string) *apiError {
	return &apiError{status: http.StatusUnauthorized, code: code, msg: msg}
}
