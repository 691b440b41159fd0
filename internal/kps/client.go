package kps

import (
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
)

// EnvEndpointPrefix starts the name of the SDK's per-region endpoint
// override of KPS: HUAWEICLOUD_SDK_REGION_KPS_CN_NORTH_4 for cn-north-4.
const EnvEndpointPrefix = "HUAWEICLOUD_SDK_REGION_KPS_"

// EndpointEnv is the environment variable that overrides the KPS endpoint
// of region, named as the official SDK names it (region upper case, '-'
// replaced by '_').
func EndpointEnv(region string) string {
	return EnvEndpointPrefix + strings.ToUpper(strings.ReplaceAll(region, "-", "_"))
}

// DefaultEndpoint is the KPS endpoint of region: KPS has no host of its
// own and answers on DEW's KMS host.
func DefaultEndpoint(region string) string {
	return "https://kms." + region + ".myhuaweicloud.com"
}

// EndpointFor is the KPS endpoint of region as the SDK finds it: the
// override in EndpointEnv(region) (the first of a comma-separated list, as
// the SDK takes it) when set, else DefaultEndpoint(region). An empty region
// gives "" so that NewClient names what is missing.
func EndpointFor(region string, getenv func(string) string) string {
	if region == "" {
		return ""
	}
	if v, _, _ := strings.Cut(getenv(EndpointEnv(region)), ","); strings.TrimSpace(v) != "" {
		return strings.TrimSpace(v)
	}
	return DefaultEndpoint(region)
}

// Endpoints resolves the KPS endpoint of each region a rotation reaches,
// the same way for the commands and the workers: the SDK's override
// (EndpointEnv) first, then Default for the default region, then the
// region's CPH endpoint when one is given (a proxy or the simulator
// serving both APIs), then DefaultEndpoint.
type Endpoints struct {
	// CPH resolves the regions' CPH endpoints; its Region is the default
	// region and its Getenv reads the SDK's overrides (nil: none).
	CPH cph.Endpoints
	// Default is the default region's KPS endpoint (--kps-endpoint).
	Default string
}

// For is the KPS endpoint of region ("": the default region); "" when no
// region is known and no endpoint given.
func (e Endpoints) For(region string) string {
	if region == "" {
		region = e.CPH.Region
	}
	if e.CPH.Getenv != nil && region != "" && e.CPH.Getenv(EndpointEnv(region)) != "" {
		return EndpointFor(region, e.CPH.Getenv)
	}
	if region == e.CPH.Region && e.Default != "" {
		return e.Default
	}
	if u := e.CPH.Config(cph.Config{Endpoint: e.CPH.Plain}, region).Endpoint; u != "" {
		return u
	}
	if region != "" {
		return DefaultEndpoint(region)
	}
	return ""
}

// Config configures a Client. ProjectID, Credentials and Endpoint are
// required.
type Config struct {
	// Endpoint is the scheme and host of KPS (see EndpointFor), e.g.
	// https://kms.cn-east-3.myhuaweicloud.com, or the simulator's URL.
	Endpoint string
	// ProjectID is the project whose keypairs are read and written.
	ProjectID string
	// Credentials authenticate every request.
	Credentials cph.Credentials
	// HTTPClient, UserAgent, Timeout and ReadRetries are as in cph.Config.
	HTTPClient  *http.Client
	UserAgent   string
	Timeout     time.Duration
	ReadRetries int
}

// Client calls KPS for one project. It is safe for concurrent use.
type Client struct {
	api       *cph.Client
	projectID string
}

// NewClient checks cfg and returns a Client. Errors name the offending
// Config field and never contain credentials.
func NewClient(cfg Config) (*Client, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("kps config: empty Endpoint (give a region or a KPS endpoint)")
	}
	api, err := cph.NewClient(cph.Config{
		Endpoint:    cfg.Endpoint,
		ProjectID:   cfg.ProjectID,
		Credentials: cfg.Credentials,
		HTTPClient:  cfg.HTTPClient,
		UserAgent:   cfg.UserAgent,
		Timeout:     cfg.Timeout,
		ReadRetries: cfg.ReadRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("kps config: %w", errors.Unwrap(err))
	}
	return &Client{api: api, projectID: cfg.ProjectID}, nil
}

// ProjectID is the project the client reads and writes.
func (c *Client) ProjectID() string { return c.projectID }

// String describes the client without its credentials.
func (c *Client) String() string { return "kps." + strings.TrimPrefix(c.api.String(), "cph.") }

// MaxNameLength is the longest keypair name accepted: KPS documents 64 (or
// 255 in newer pages), and CPH's keypair_name takes at most 64.
const MaxNameLength = 64

var namePattern = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// CheckName reports whether name is a keypair name KPS and CPH both
// accept: 1 to 64 letters, digits, '_' or '-'.
func CheckName(name string) error {
	switch {
	case name == "":
		return errors.New("empty keypair name")
	case len(name) > MaxNameLength:
		return fmt.Errorf("keypair name %.20q…: %d characters, more than %d", name, len(name), MaxNameLength)
	case !namePattern.MatchString(name):
		return fmt.Errorf("keypair name %q: only letters, digits, '_' and '-' are allowed", name)
	}
	return nil
}
