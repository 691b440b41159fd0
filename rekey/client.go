package rekey

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/iam"
	"github.com/cph-rekey/cph-rekey/internal/kps"
	"github.com/cph-rekey/cph-rekey/internal/ratelimit"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
)

// Options configure a Client. The zero value is a client that can do
// everything but read the fleet: Start and Plan then need
// Request.NoSkipMatching and a target list.
type Options struct {
	// Namespace is the deployment the client steers: the workers' (and
	// their console's) --namespace. Deployments of different namespaces
	// share a Redis without seeing each other's rotations, tasks or
	// quotas. Empty: the default namespace. A namespace is 1-32 letters,
	// digits, '_' and '-', starting with a letter or digit; another is an
	// *InputError from NewClient.
	Namespace string
	// TaskTimeout bounds one run of each task the client enqueues (the
	// workers' handlers honour it). Zero: 2 minutes, the workers' own.
	TaskTimeout time.Duration
	// CPH is the CPH API the client reads the fleet from: discovery,
	// skip-matching (which records each server's old keypair, so a
	// rotation can be rolled back) and dry runs. Nil: no reads.
	CPH *CPH
	// ReadRate paces those reads (ListCloudPhoneServers pages), so a plan
	// stays within the read quota the workers also use. Zero: 20 a second,
	// bursts of 5 (the workers' --read-rate default).
	ReadRate Rate
}

// CPH names a CPH endpoint and the credentials for it, as the official
// SDK's environment variables do (CPHFromEnv reads them).
type CPH struct {
	// Region selects https://cph.{Region}.myhuaweicloud.com, e.g. "cn-east-3".
	Region string
	// Endpoint, when set, overrides Region (a proxy, the simulator).
	Endpoint string
	// Endpoints are the endpoints of other regions targets are in
	// (enqueue's --endpoint REGION=URL), before Getenv's.
	Endpoints map[string]string
	// Getenv reads the official SDK's per-region endpoint overrides,
	// HUAWEICLOUD_SDK_REGION_CPH_{REGION} and, for the Key Pair Service,
	// HUAWEICLOUD_SDK_REGION_KPS_{REGION} (CPHFromEnv sets it); nil: none.
	Getenv func(string) string
	// KPSEndpoint is the default Region's Key Pair Service endpoint, which
	// the keypair pre-flight and ImportKeypair ask (KPS answers on DEW's
	// KMS host). A region's KPS endpoint is, in order: the SDK's
	// HUAWEICLOUD_SDK_REGION_KPS_{REGION} override (through Getenv), this
	// one for the default Region, the region's CPH endpoint when one is
	// given (Endpoint, Endpoints or the SDK's CPH override: a proxy or the
	// simulator serving both), then https://kms.{region}.myhuaweicloud.com.
	KPSEndpoint string
	// ProjectID is the regional project (HUAWEICLOUD_SDK_PROJECT_ID).
	ProjectID string
	// IAMEndpoint is the IAM endpoint a discovery across projects lists
	// the projects from (GET /v3/auth/projects). Empty: the SDK's
	// HUAWEICLOUD_SDK_IAM_ENDPOINT (through Getenv), else
	// https://iam.myhuaweicloud.com.
	IAMEndpoint string
	// AccessKey and SecretKey sign every request; SecurityToken goes with
	// temporary keys. IAMToken replaces the three (requests are not
	// signed); set either a key pair or a token.
	AccessKey, SecretKey, SecurityToken string
	IAMToken                            string
	// HTTPClient sends the requests. Nil: a client of the package's own
	// with TLS verification on. Redirects are never followed.
	HTTPClient *http.Client
}

// CPHFromEnv reads the CPH credentials from the official SDK's environment
// variables (HUAWEICLOUD_SDK_AK, _SK, _PROJECT_ID, _SECURITY_TOKEN) and
// REKEY_IAM_TOKEN, as the cph-rekey commands do; getenv is usually
// os.Getenv. Region or Endpoint is the caller's to set.
func CPHFromEnv(getenv func(string) string) *CPH {
	c := cph.CredentialsFromEnv(getenv)
	return &CPH{ProjectID: getenv("HUAWEICLOUD_SDK_PROJECT_ID"), AccessKey: c.AccessKey, SecretKey: c.SecretKey,
		SecurityToken: c.SecurityToken, IAMToken: c.AuthToken, Getenv: getenv}
}

// KnownRegions are the regions targets may name: those the CPH API is
// served in, the default Region and those given Endpoints.
func (c *CPH) KnownRegions() []string { return c.endpoints().KnownRegions() }

func (c *CPH) endpoints() cph.Endpoints {
	return cph.Endpoints{Region: c.Region, Plain: c.Endpoint, Regions: c.Endpoints, Getenv: c.Getenv}
}

// String prints the endpoint and project, never the secrets.
func (c *CPH) String() string {
	return fmt.Sprintf("CPH{Region:%q Endpoint:%q ProjectID:%q %s}", c.Region, c.Endpoint, c.ProjectID, c.credentials())
}

// GoString is String, so %#v does not print the secrets either.
func (c *CPH) GoString() string { return c.String() }

// kpsEndpoint is the KPS endpoint of region ("": the default Region), as
// KPSEndpoint says.
func (c *CPH) kpsEndpoint(region string) string {
	return kps.Endpoints{CPH: c.endpoints(), Default: c.KPSEndpoint}.For(region)
}

// iamEndpoint is the IAM endpoint, as IAMEndpoint says.
func (c *CPH) iamEndpoint() string {
	switch {
	case c.IAMEndpoint != "":
		return c.IAMEndpoint
	case c.Getenv != nil:
		return iam.EndpointFrom(c.Getenv)
	}
	return iam.DefaultEndpoint
}

func (c *CPH) credentials() cph.Credentials {
	return cph.Credentials{AccessKey: c.AccessKey, SecretKey: c.SecretKey, SecurityToken: c.SecurityToken, AuthToken: c.IAMToken}
}

// Rate is a pace: Events per Per, of which up to Burst may come back to
// back after a quiet spell.
type Rate struct {
	Events int
	Per    time.Duration
	Burst  int
}

// ParseRate reads a rate as the commands' flags write it: "10/s",
// "600/m", "20/s:5" (burst 5).
func ParseRate(s string) (Rate, error) {
	l, err := ratelimit.ParseLimit(s)
	if err != nil {
		return Rate{}, &InputError{Err: err}
	}
	return Rate{Events: l.Rate, Per: l.Period, Burst: l.Burst}, nil
}

// String writes r as ParseRate reads it.
func (r Rate) String() string { return r.limit().String() }

func (r Rate) limit() ratelimit.Limit {
	return ratelimit.Limit{Rate: r.Events, Period: r.Per, Burst: r.Burst}
}

// defaultReadRate is the pace of a plan's reads: the workers' --read-rate.
var defaultReadRate = Rate{Events: 20, Per: time.Second, Burst: 5}

// Client starts and steers rotations. It talks to the Redis the workers
// use; a worker pool (cmd/worker) does the rotating. A Client is safe for
// concurrent use; Close it when done (the Redis client stays the
// caller's).
type Client struct {
	rdb   redis.UniversalClient
	store *tasks.Store
	enq   *asynq.Client
	tasks tasks.TaskOptions // every task the client enqueues, as the workers enqueue theirs
	api   *cph.Client       // nil: no CPH configured
	cph   *CPH
	base  cph.Config // api's configuration, for the other places' clients

	mu     sync.Mutex
	placed map[tasks.Place]*cph.Client // clients of places other than api's
	kps    map[tasks.Place]*kps.Client // KPS clients, made when first asked
}

// NewClient returns a Client over rdb, the Redis of the workers (any
// go-redis client: standalone, Sentinel, Cluster). It reports a CPH
// configuration that cannot work (no project, half a key pair) as an
// *InputError; it does not connect to anything.
func NewClient(rdb redis.UniversalClient, opts Options) (*Client, error) {
	if rdb == nil {
		return nil, &InputError{Err: errors.New("rekey: NewClient needs a Redis client")}
	}
	ns := tasks.Namespace(opts.Namespace)
	if err := ns.Validate(); err != nil {
		return nil, &InputError{Err: err}
	}
	if opts.TaskTimeout < 0 {
		return nil, badInput("task timeout %s: want a positive duration, or zero for the default", opts.TaskTimeout)
	}
	c := &Client{rdb: rdb, store: tasks.NewStore(rdb, ns), enq: asynq.NewClientFromRedisClient(rdb),
		tasks: tasks.TaskOptions{Timeout: opts.TaskTimeout}}
	if opts.CPH != nil {
		rr := opts.ReadRate
		if rr == (Rate{}) {
			rr = defaultReadRate
		}
		if err := rr.limit().Validate(); err != nil {
			return nil, &InputError{Err: fmt.Errorf("read rate: %w", err)}
		}
		// The fleet is read page by page at the read rate: a throttled or
		// failed page is read again rather than failing the plan.
		c.base = cph.Config{Region: opts.CPH.Region, Endpoint: opts.CPH.Endpoint, ProjectID: opts.CPH.ProjectID,
			Credentials: opts.CPH.credentials(), HTTPClient: opts.CPH.HTTPClient, ReadRetries: 10, ReadRate: rr.limit().Local()}
		api, err := cph.NewClient(c.base)
		if err != nil {
			return nil, &InputError{Err: err}
		}
		c.api, c.cph = api, opts.CPH
	}
	return c, nil
}

// Namespace is the namespace of the rotations the client steers
// (Options.Namespace).
func (c *Client) Namespace() string { return string(c.store.Namespace()) }

// Close ends the client's use. The Redis client given to NewClient stays
// open: it is the caller's to close.
func (c *Client) Close() error {
	// The asynq client shares the caller's connection and has nothing of
	// its own to close (its Close refuses a shared connection).
	return nil
}

// ParseEndpoints reads the values of a repeated --endpoint flag: at most
// one plain URL, the default Region's endpoint (CPH.Endpoint), and any
// number of REGION=URL, one a region (CPH.Endpoints). A bad value is an
// *InputError.
func ParseEndpoints(values []string) (plain string, perRegion map[string]string, err error) {
	plain, perRegion, err = cph.ParseEndpoints(values)
	if err != nil {
		return "", nil, &InputError{Err: err}
	}
	return plain, perRegion, nil
}
