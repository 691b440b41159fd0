package cph

import (
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestCredentialsFromEnv(t *testing.T) {
	env := map[string]string{
		EnvAccessKey:     " " + testAK + "\n",
		EnvSecretKey:     testSK + "\n",
		EnvSecurityToken: testToken,
		EnvProjectID:     testProject,
		"UNRELATED":      "x",
	}
	got := CredentialsFromEnv(func(k string) string { return env[k] })
	want := Credentials{AccessKey: testAK, SecretKey: testSK, SecurityToken: testToken}
	if got != want {
		t.Errorf("CredentialsFromEnv = %#v", got) // redacted, so compare fields below
		for _, f := range [][2]string{{got.AccessKey, want.AccessKey}, {got.SecretKey, want.SecretKey}, {got.SecurityToken, want.SecurityToken}} {
			if f[0] != f[1] {
				t.Errorf("field differs from the environment (lengths %d, %d)", len(f[0]), len(f[1]))
			}
		}
	}
	if tok := CredentialsFromEnv(func(k string) string { return map[string]string{EnvAuthToken: testIAM}[k] }); tok.AuthToken != testIAM {
		t.Errorf("%s not read", EnvAuthToken)
	}
}

func TestCredentialsValidate(t *testing.T) {
	tests := []struct {
		name  string
		creds Credentials
		want  string // "" means valid
	}{
		{"AK/SK", Credentials{AccessKey: testAK, SecretKey: testSK}, ""},
		{"temporary AK/SK", Credentials{AccessKey: testAK, SecretKey: testSK, SecurityToken: testToken}, ""},
		{"IAM token", Credentials{AuthToken: testIAM}, ""},
		{"none", Credentials{}, "none given"},
		{"AK only", Credentials{AccessKey: testAK}, "secret key (HUAWEICLOUD_SDK_SK) is empty"},
		{"SK only", Credentials{SecretKey: testSK}, "access key (HUAWEICLOUD_SDK_AK) is empty"},
		{"both kinds", Credentials{AccessKey: testAK, SecretKey: testSK, AuthToken: testIAM}, "not both"},
		{"security token alone", Credentials{SecurityToken: testToken}, "security token needs"},
		{"security token with IAM token", Credentials{SecurityToken: testToken, AuthToken: testIAM}, "security token needs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.creds.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate = %v, want an error containing %q", err, tt.want)
			}
			assertNoSecrets(t, err)
		})
	}
}

func TestSecretsAreRedacted(t *testing.T) {
	creds := Credentials{AccessKey: testAK, SecretKey: testSK, SecurityToken: testToken, AuthToken: testIAM}
	cfg := testConfig("http://127.0.0.1:1")
	cfg.Credentials = Credentials{AccessKey: testAK, SecretKey: testSK, SecurityToken: testToken}
	client, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logged strings.Builder
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "creds", creds, "cfg", cfg, "client", client)
	texts := []string{
		creds.String(), fmt.Sprint(creds), fmt.Sprintf("%+v", creds), fmt.Sprintf("%#v", creds),
		fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg), fmt.Sprintf("%+v", &cfg),
		fmt.Sprint(client), fmt.Sprintf("%+v", client), fmt.Sprintf("%#v", client),
		logged.String(),
	}
	for _, text := range texts {
		for _, secret := range []string{testSK, testToken, testIAM} {
			if strings.Contains(text, secret) {
				t.Errorf("printed a secret: %s", text)
			}
		}
		if strings.Contains(text, testAK) {
			t.Errorf("printed the whole access key: %s", text)
		}
	}
	if want := "cph.Credentials{AK:AKTE****, SK:[redacted], SecurityToken:[redacted], AuthToken:[redacted]}"; creds.String() != want {
		t.Errorf("String = %s, want %s", creds.String(), want)
	}
	if want := "cph.Credentials{AK:[empty], SK:[empty], SecurityToken:[empty], AuthToken:[empty]}"; (Credentials{}).String() != want {
		t.Errorf("zero String = %s, want %s", Credentials{}.String(), want)
	}
}

func TestNewClientValidatesConfig(t *testing.T) {
	valid := testConfig("http://127.0.0.1:8081")
	tests := []struct {
		name string
		mod  func(*Config)
		want []string // substrings of the error; none means valid
	}{
		{name: "valid endpoint", mod: func(*Config) {}},
		{name: "valid region", mod: func(c *Config) { c.Endpoint = ""; c.Region = "cn-east-3" }},
		{name: "endpoint with path prefix", mod: func(c *Config) { c.Endpoint = "https://proxy.example.com/cph/" }},
		{name: "missing project id", mod: func(c *Config) { c.ProjectID = "" }, want: []string{"empty ProjectID", EnvProjectID}},
		{name: "project id with slash", mod: func(c *Config) { c.ProjectID = "a/b" }, want: []string{`bad ProjectID "a/b"`}},
		{name: "no credentials", mod: func(c *Config) { c.Credentials = Credentials{} }, want: []string{"credentials: none given"}},
		{name: "no region or endpoint", mod: func(c *Config) { c.Endpoint = "" }, want: []string{"neither Region nor Endpoint"}},
		{name: "bad region", mod: func(c *Config) { c.Endpoint = ""; c.Region = "cn east/3" }, want: []string{`bad Region "cn east/3"`}},
		{name: "region with a dot", mod: func(c *Config) { c.Endpoint = ""; c.Region = "evil.com/x" }, want: []string{"bad Region"}},
		{name: "endpoint without scheme", mod: func(c *Config) { c.Endpoint = "127.0.0.1:8081" }, want: []string{"bad Endpoint"}},
		{name: "endpoint ftp", mod: func(c *Config) { c.Endpoint = "ftp://example.com" }, want: []string{"scheme must be http or https"}},
		{name: "endpoint no host", mod: func(c *Config) { c.Endpoint = "http://" }, want: []string{"no host"}},
		{name: "endpoint user info", mod: func(c *Config) { c.Endpoint = "https://user:" + testSK + "@example.com" },
			want: []string{"must not contain user info"}},
		{name: "endpoint query", mod: func(c *Config) { c.Endpoint = "https://example.com?a=b" }, want: []string{"query or fragment"}},
		{name: "endpoint unparsable", mod: func(c *Config) { c.Endpoint = "http://[::1" + testSK }, want: []string{"bad Endpoint: not a URL"}},
		{name: "negative timeout", mod: func(c *Config) { c.Timeout = -time.Second }, want: []string{"negative Timeout"}},
		{name: "negative idle conns", mod: func(c *Config) { c.MaxIdleConnsPerHost = -1 }, want: []string{"negative MaxIdleConnsPerHost"}},
		{name: "user agent newline", mod: func(c *Config) { c.UserAgent = "a\r\nX-Evil: 1" }, want: []string{"bad UserAgent"}},
		{name: "several problems at once", mod: func(c *Config) { c.ProjectID = ""; c.Credentials = Credentials{}; c.Endpoint = "" },
			want: []string{"empty ProjectID", "none given", "neither Region nor Endpoint"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := valid
			tt.mod(&cfg)
			c, err := NewClient(cfg)
			if len(tt.want) == 0 {
				if err != nil || c == nil {
					t.Fatalf("NewClient: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("NewClient accepted the config")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), testSK) {
				t.Errorf("error contains the secret key: %v", err)
			}
		})
	}
}

func TestNewClientDefaults(t *testing.T) {
	cfg := testConfig("")
	cfg.Endpoint, cfg.Region, cfg.UserAgent, cfg.Now = "", "ap-southeast-1", "", nil
	custom := &http.Client{Timeout: time.Minute}
	cfg.HTTPClient = custom
	c, err := NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := c.base.String(); got != "https://cph.ap-southeast-1.myhuaweicloud.com" {
		t.Errorf("endpoint %s", got)
	}
	if !strings.HasPrefix(c.userAgent, "cph-rekey/") || c.timeout != DefaultTimeout || c.now == nil {
		t.Errorf("defaults: user agent %q, timeout %s", c.userAgent, c.timeout)
	}
	if c.http == custom || custom.CheckRedirect != nil || c.http.Timeout != time.Minute {
		t.Error("the caller's http.Client must be copied, not changed")
	}
}
