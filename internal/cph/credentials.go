package cph

import (
	"errors"
	"strings"
)

// Environment variables read by CredentialsFromEnv. The first four are the
// names the official Huawei Cloud SDK uses; the IAM token one is ours (the
// SDK has none).
const (
	EnvAccessKey     = "HUAWEICLOUD_SDK_AK"
	EnvSecretKey     = "HUAWEICLOUD_SDK_SK"
	EnvSecurityToken = "HUAWEICLOUD_SDK_SECURITY_TOKEN"
	EnvProjectID     = "HUAWEICLOUD_SDK_PROJECT_ID"
	EnvAuthToken     = "REKEY_IAM_TOKEN"
)

// Credentials authenticate requests either with an access key pair (AK/SK,
// optionally temporary with a SecurityToken), which signs every request, or
// with an IAM user token (AuthToken), which is sent as X-Auth-Token. Exactly
// one of the two must be set.
//
// String and GoString redact everything but the first characters of the
// AK, so Credentials and structs holding them can be printed and logged.
type Credentials struct {
	AccessKey     string
	SecretKey     string
	SecurityToken string
	AuthToken     string
}

// CredentialsFromEnv reads HUAWEICLOUD_SDK_AK, HUAWEICLOUD_SDK_SK,
// HUAWEICLOUD_SDK_SECURITY_TOKEN and REKEY_IAM_TOKEN through getenv
// (os.Getenv in production). Values are trimmed of surrounding white space,
// which a Kubernetes secret created from a file often carries.
func CredentialsFromEnv(getenv func(string) string) Credentials {
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	return Credentials{
		AccessKey:     get(EnvAccessKey),
		SecretKey:     get(EnvSecretKey),
		SecurityToken: get(EnvSecurityToken),
		AuthToken:     get(EnvAuthToken),
	}
}

// Validate reports incomplete or ambiguous credentials, naming the missing
// or conflicting part but never its value.
func (c Credentials) Validate() error {
	aksk := c.AccessKey != "" || c.SecretKey != ""
	switch {
	case aksk && c.AuthToken != "":
		return errors.New("credentials: set either an AK/SK pair or an IAM token (" + EnvAuthToken + "), not both")
	case c.AccessKey != "" && c.SecretKey == "":
		return errors.New("credentials: access key is set but the secret key (" + EnvSecretKey + ") is empty")
	case c.AccessKey == "" && c.SecretKey != "":
		return errors.New("credentials: secret key is set but the access key (" + EnvAccessKey + ") is empty")
	case c.SecurityToken != "" && !aksk:
		return errors.New("credentials: a security token needs the temporary AK/SK it belongs to (" +
			EnvAccessKey + ", " + EnvSecretKey + ")")
	case !aksk && c.AuthToken == "":
		return errors.New("credentials: none given: set " + EnvAccessKey + " and " + EnvSecretKey +
			" (or an IAM token in " + EnvAuthToken + ")")
	}
	return nil
}

// secrets lists the values that must never appear in an error or a log.
func (c Credentials) secrets() []string {
	var s []string
	for _, v := range []string{c.AccessKey, c.SecretKey, c.SecurityToken, c.AuthToken} {
		if v != "" {
			s = append(s, v)
		}
	}
	return s
}

// String describes the credentials without revealing them: the first
// characters of the AK and, for the rest, whether they are set.
func (c Credentials) String() string {
	ak := "[empty]"
	if c.AccessKey != "" {
		ak = redact(c.AccessKey)
	}
	return "cph.Credentials{AK:" + ak + ", SK:" + present(c.SecretKey) +
		", SecurityToken:" + present(c.SecurityToken) + ", AuthToken:" + present(c.AuthToken) + "}"
}

// GoString keeps %#v from printing the secrets.
func (c Credentials) GoString() string { return c.String() }

func present(secret string) string {
	if secret == "" {
		return "[empty]"
	}
	return "[redacted]"
}
