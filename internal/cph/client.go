package cph

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"regexp"
	"runtime/debug"
	"strings"
	"sync/atomic"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/time/rate"
)

// Defaults of Config.
const (
	DefaultTimeout             = 30 * time.Second
	DefaultMaxIdleConnsPerHost = 100
	// MaxResponseBytes bounds how much of an answer is read, so a broken
	// server cannot exhaust memory. The largest legitimate answer, a page of
	// 100 servers, is a few hundred KiB.
	MaxResponseBytes = 8 << 20
)

// Config configures a Client. Only ProjectID, Credentials and one of
// Region or Endpoint are required.
type Config struct {
	// Region selects the endpoint https://cph.{Region}.myhuaweicloud.com,
	// e.g. "cn-east-3".
	Region string
	// Endpoint, when set, overrides Region: scheme and host (and an
	// optional path prefix), e.g. http://127.0.0.1:8081 for the simulator.
	Endpoint string
	// ProjectID is the regional project id (HUAWEICLOUD_SDK_PROJECT_ID). It
	// is sent in the path and in X-Project-Id.
	ProjectID string
	// Global marks a client of a global service (IAM), whose calls are in
	// no project: ProjectID may be empty, and no X-Project-Id is sent.
	Global bool
	// Credentials authenticate every request.
	Credentials Credentials
	// HTTPClient sends the requests. Nil: a client of its own with TLS
	// verification on and MaxIdleConnsPerHost idle connections kept per
	// host. Either way redirects are not followed, so credentials are never
	// sent to another host.
	HTTPClient *http.Client
	// MaxIdleConnsPerHost sizes the idle connection pool of the default
	// HTTPClient; set it to the number of concurrent callers. Zero:
	// DefaultMaxIdleConnsPerHost. Ignored when HTTPClient is set.
	MaxIdleConnsPerHost int
	// UserAgent is sent as User-Agent (and signed). Empty:
	// "cph-rekey/<module version>".
	UserAgent string
	// Timeout bounds each request, through its context. Zero: DefaultTimeout.
	Timeout time.Duration
	// Now is the clock used for X-Sdk-Date and Retry-After dates. Nil: time.Now.
	Now func() time.Time
	// ReadRetries is how many times a read (GET) that was throttled or
	// failed transiently is tried again, after its Retry-After or a
	// full-jitter backoff (500 ms doubling, capped at 20 s). Zero: never,
	// for callers that retry themselves (the worker's tasks do). Writes are
	// never retried here: only the caller knows whether repeating one is safe.
	ReadRetries int
	// ReadRate, when set, paces every read (GET) of the client, retries
	// included, so a command that pages through a fleet stays within the
	// read quota instead of learning it from 429s. Nil: unpaced (the
	// worker's tasks pace themselves with the fleet-wide limiter).
	ReadRate *rate.Limiter
}

// Client calls the CPH API. It is safe for concurrent use; share one per
// process so connections are reused.
type Client struct {
	base      *url.URL
	projectID string
	creds     Credentials
	signer    *Signer
	http      *http.Client
	userAgent string
	timeout   time.Duration
	now       func() time.Time
	retries   int
	reads     *rate.Limiter
}

var regionPattern = regexp.MustCompile(`^[a-z]{2,}(-[a-z0-9]+)+$`)

// NewClient checks cfg and returns a Client. Errors name the offending
// Config field and never contain credentials.
func NewClient(cfg Config) (*Client, error) {
	var errs []error
	switch {
	case cfg.Global && cfg.ProjectID != "":
		errs = append(errs, errors.New("a ProjectID for a global service, whose calls are in no project"))
	case cfg.Global:
	case cfg.ProjectID == "":
		errs = append(errs, errors.New("empty ProjectID (set "+EnvProjectID+")"))
	default:
		if err := checkID("ProjectID", cfg.ProjectID); err != nil {
			errs = append(errs, err)
		}
	}
	if err := cfg.Credentials.Validate(); err != nil {
		errs = append(errs, err)
	}
	base, err := endpointURL(cfg.Region, cfg.Endpoint)
	if err != nil {
		errs = append(errs, err)
	}
	if cfg.Timeout < 0 {
		errs = append(errs, fmt.Errorf("negative Timeout %s", cfg.Timeout))
	}
	if cfg.ReadRetries < 0 {
		errs = append(errs, fmt.Errorf("negative ReadRetries %d", cfg.ReadRetries))
	}
	if cfg.MaxIdleConnsPerHost < 0 {
		errs = append(errs, fmt.Errorf("negative MaxIdleConnsPerHost %d", cfg.MaxIdleConnsPerHost))
	}
	if strings.ContainsAny(cfg.UserAgent, "\r\n") {
		errs = append(errs, errors.New("bad UserAgent: contains a line break"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("cph config: %w", errors.Join(errs...))
	}
	c := &Client{
		base:      base,
		projectID: cfg.ProjectID,
		creds:     cfg.Credentials,
		userAgent: cfg.UserAgent,
		timeout:   cfg.Timeout,
		now:       cfg.Now,
		retries:   cfg.ReadRetries,
		reads:     cfg.ReadRate,
	}
	if cfg.Credentials.AccessKey != "" {
		c.signer = NewSigner(cfg.Credentials.AccessKey, cfg.Credentials.SecretKey)
	}
	if c.userAgent == "" {
		c.userAgent = defaultUserAgent()
	}
	c.timeout = cmp.Or(c.timeout, DefaultTimeout)
	if c.now == nil {
		c.now = time.Now
	}
	if cfg.HTTPClient != nil {
		hc := *cfg.HTTPClient
		c.http = &hc
	} else {
		c.http = newHTTPClient(cmp.Or(cfg.MaxIdleConnsPerHost, DefaultMaxIdleConnsPerHost))
	}
	c.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return c, nil
}

// endpointURL derives the base URL from Region or Endpoint.
func endpointURL(region, endpoint string) (*url.URL, error) {
	if endpoint == "" {
		switch {
		case region == "":
			return nil, errors.New("neither Region nor Endpoint is set (e.g. --region cn-east-3)")
		case !regionPattern.MatchString(region):
			return nil, fmt.Errorf("bad Region %q: want a region name like cn-east-3", region)
		}
		return &url.URL{Scheme: "https", Host: "cph." + region + ".myhuaweicloud.com"}, nil
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL, user info included
		}
		return nil, fmt.Errorf("bad Endpoint: not a URL: %v", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("bad Endpoint %q: scheme must be http or https", u.Redacted())
	case u.Host == "":
		return nil, fmt.Errorf("bad Endpoint %q: no host", u.Redacted())
	case u.User != nil:
		return nil, fmt.Errorf("bad Endpoint %q: must not contain user info", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "" || u.ForceQuery:
		return nil, fmt.Errorf("bad Endpoint %q: must not have a query or fragment", u.Redacted())
	}
	u.Path = strings.TrimRight(u.Path, "/")
	u.RawPath = ""
	return u, nil
}

func newHTTPClient(idlePerHost int) *http.Client {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConns = max(t.MaxIdleConns, idlePerHost)
	t.MaxIdleConnsPerHost = idlePerHost
	t.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: t}
}

func defaultUserAgent() string {
	v := "dev"
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		v = bi.Main.Version
	}
	return "cph-rekey/" + v
}

// String describes the client without its credentials.
func (c *Client) String() string {
	return fmt.Sprintf("cph.Client{Endpoint:%s, ProjectID:%s, Credentials:%s}", c.base, c.projectID, c.creds)
}

// GoString keeps %#v from printing the credentials.
func (c *Client) GoString() string { return c.String() }

// checkID rejects ids that cannot be put in a URL path as they are: CPH ids
// are 32 hex digits (older ones UUIDs), so only unreserved characters are
// accepted.
func checkID(what, id string) error {
	switch {
	case id == "":
		return fmt.Errorf("empty %s", what)
	case len(id) > 64:
		return fmt.Errorf("bad %s: %d bytes, longer than 64", what, len(id))
	}
	for i := 0; i < len(id); i++ {
		if !unreserved(id[i]) {
			return fmt.Errorf("bad %s %q: contains %q; ids are letters, digits, '-', '_', '.' or '~'", what, id, id[i])
		}
	}
	return nil
}

// do sends a request to path, relative to /v1/{project_id}/cloud-phone/,
// trying a read again up to ReadRetries times when it was throttled or
// failed transiently. Every error it returns is a *Error.
func (c *Client) do(ctx context.Context, op, method, path string, query url.Values, in, out any) error {
	return c.call(ctx, op, method, c.phonePath(path), query, in, out, nil)
}

// phonePath is the full path of a CPH resource.
func (c *Client) phonePath(path string) string {
	return "/v1/" + c.projectID + "/cloud-phone/" + path
}

// Call sends a request to path, relative to the endpoint (e.g.
// "/v3/{project_id}/keypairs"), with this client's signing, limits, retries
// of reads and error classification, and decodes a 2xx JSON answer into out
// (nil: the answer is not read). It is for clients of the other Huawei
// Cloud services a rotation needs (internal/kps), so they share one
// transport and one kind of error rather than copy them. op names the API
// in errors. Every error it returns is a *Error.
func (c *Client) Call(ctx context.Context, op, method, path string, query url.Values, in, out any) error {
	if !strings.HasPrefix(path, "/") {
		return &Error{Op: op, Kind: KindPermanent, Err: fmt.Errorf("path %q does not start with /", path)}
	}
	return c.call(ctx, op, method, path, query, in, out, nil)
}

// observer counts what a walk's reads went through, for its pace and its
// progress. Its methods are safe for concurrent use.
type observer struct {
	throttled, retries atomic.Int64
	// rtt is a moving average of the round trips answered (nanoseconds;
	// 0: none yet).
	rtt atomic.Int64
}

func (o *observer) roundTrip(d time.Duration) {
	for {
		old := o.rtt.Load()
		avg := int64(d)
		if old > 0 {
			avg = old + (int64(d)-old)/8
		}
		if o.rtt.CompareAndSwap(old, avg) {
			return
		}
	}
}

// call is do, telling obs (when not nil) about each attempt.
func (c *Client) call(ctx context.Context, op, method, path string, query url.Values, in, out any, obs *observer) error {
	for attempt := 0; ; attempt++ {
		if c.reads != nil && method == http.MethodGet {
			if err := c.reads.Wait(ctx); err != nil {
				return &Error{Op: op, Kind: KindTransient, Err: fmt.Errorf("wait for the read rate: %w", err)}
			}
		}
		sent := time.Now()
		err := c.doOnce(ctx, op, method, path, query, in, out)
		if obs != nil {
			var e *Error
			if !errors.As(err, &e) || e.StatusCode != 0 {
				obs.roundTrip(time.Since(sent)) // an answer came back
			}
			if IsThrottled(err) {
				obs.throttled.Add(1)
			}
		}
		if err == nil || method != http.MethodGet || attempt >= c.retries || !KindOf(err).Retryable() {
			return err
		}
		if obs != nil {
			obs.retries.Add(1)
		}
		wait := RetryAfter(err)
		if wait <= 0 {
			wait = rand.N(min(20*time.Second, 500*time.Millisecond<<attempt) + 1)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// doOnce sends one request and decodes a 2xx answer into out (nil: the
// answer is not read). path is relative to the endpoint.
func (c *Client) doOnce(ctx context.Context, op, method, path string, query url.Values, in, out any) error {
	var body []byte
	if in != nil {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(in); err != nil {
			return &Error{Op: op, Kind: KindPermanent, Err: fmt.Errorf("encode request: %w", err)}
		}
		body = buf.Bytes()
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	u := *c.base
	u.Path += path
	u.RawQuery = EncodeQuery(query)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return &Error{Op: op, Kind: KindPermanent, Err: err}
	}
	if body == nil {
		req.Body = http.NoBody
		req.ContentLength = 0
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if c.projectID != "" {
		req.Header.Set(HeaderProjectID, c.projectID)
	}
	if c.creds.SecurityToken != "" {
		req.Header.Set(HeaderSecurityToken, c.creds.SecurityToken)
	}
	if c.signer != nil {
		c.signer.Sign(req, body, c.now())
	} else {
		req.Header.Set(HeaderAuthToken, c.creds.AuthToken)
	}

	resp, err := c.http.Do(req)
	if err != nil {
		return &Error{Op: op, Kind: transportKind(err), Err: c.scrub(err)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, MaxResponseBytes+1))
	if err != nil {
		return &Error{Op: op, Kind: transportKind(err), RequestID: resp.Header.Get("X-Request-Id"),
			Err: fmt.Errorf("read HTTP %d answer: %w", resp.StatusCode, c.scrub(err))}
	}
	if len(data) > MaxResponseBytes {
		return &Error{Op: op, StatusCode: resp.StatusCode, Kind: KindTransient, RequestID: resp.Header.Get("X-Request-Id"),
			Err: fmt.Errorf("answer is larger than %d bytes", MaxResponseBytes)}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return c.apiError(op, resp.StatusCode, resp.Header, data)
	}
	if out == nil {
		return nil
	}
	if err := decode(data, out); err != nil {
		if errors.Is(err, errNotObject) {
			err = fmt.Errorf("%w: %s", err, c.snippet(data))
		}
		return &Error{Op: op, StatusCode: resp.StatusCode, Kind: KindTransient, RequestID: resp.Header.Get("X-Request-Id"), Err: c.scrub(err)}
	}
	return nil
}

// errNotObject is decode's error for a body that is not a JSON object.
var errNotObject = errors.New("answer is not a JSON object")

// decode unmarshals a 2xx answer and checks its ids and codes (see
// checker). Unknown fields are ignored and null leaves a field unset; a
// body that is not one JSON object is an error.
func decode(data []byte, out any) error {
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return errNotObject
	}
	if err := json.Unmarshal(trimmed, out); err != nil {
		return fmt.Errorf("decode answer: %w", err)
	}
	if c, ok := out.(checker); ok {
		if err := c.check(); err != nil {
			return fmt.Errorf("answer: %w", err)
		}
	}
	return nil
}

// errorBody is what an error answer may carry: CPH and the gateway use
// error_code/error_msg; some services use code/message.
type errorBody struct {
	RequestID string `json:"request_id"`
	ErrorCode string `json:"error_code"`
	ErrorMsg  string `json:"error_msg"`
	Code      string `json:"code"`
	Message   string `json:"message"`
}

// apiError builds the error of a non-2xx answer.
func (c *Client) apiError(op string, status int, h http.Header, data []byte) *Error {
	e := &Error{Op: op, StatusCode: status, RequestID: h.Get("X-Request-Id")}
	var eb errorBody
	if trimmed := bytes.TrimSpace(data); len(trimmed) > 0 && trimmed[0] == '{' && json.Unmarshal(trimmed, &eb) == nil {
		e.Code = cleanCode(c.scrubString(cmp.Or(eb.ErrorCode, eb.Code)))
		e.Message = c.text(cmp.Or(eb.ErrorMsg, eb.Message), 512)
		if eb.RequestID != "" {
			e.RequestID = eb.RequestID
		}
	} else if len(bytes.TrimSpace(data)) > 0 {
		// A gateway or proxy answered with HTML or plain text.
		e.Message = "non-JSON answer: " + c.snippet(data)
	}
	if e.Message == "" {
		e.Message = http.StatusText(status)
	}
	e.RequestID = c.text(e.RequestID, 128)
	e.Kind = statusKind(status, e.Code)
	// 429 and 503 may carry Retry-After; honour it on any error answer.
	e.RetryAfter = parseRetryAfter(h.Get("Retry-After"), c.now())
	return e
}

// snippet shows the start of a body that could not be decoded, on one
// line, without credentials.
func (c *Client) snippet(data []byte) string {
	return c.text(strings.Join(strings.Fields(printable(string(data))), " "), 200)
}

// text makes text an answer brought fit for an error: control characters
// and invalid UTF-8 dropped (so an answer cannot forge log lines),
// credentials scrubbed, then cut to at most n bytes. Scrubbing comes
// before the cut, so a credential the cut would split is removed whole
// rather than half kept, and after the drop, so one split by a control
// character is found too.
func (c *Client) text(s string, n int) string {
	return truncate(c.scrubString(printable(s)), n)
}

// truncate cuts s to at most n bytes, on a rune boundary, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…"
}

// printable drops control characters (whitespace ones become spaces) and
// invalid UTF-8.
func printable(s string) string {
	return strings.Map(func(r rune) rune {
		if r == utf8.RuneError || unicode.IsControl(r) && r != ' ' {
			if unicode.IsSpace(r) {
				return ' '
			}
			return -1
		}
		return r
	}, s)
}

// scrubString removes the client's credentials from text an answer or a
// transport error brought, in case a proxy echoed a request header.
func (c *Client) scrubString(s string) string {
	for _, secret := range c.creds.secrets() {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	return s
}

// scrub returns err, or a copy of its message without credentials if it
// contains any (losing the chain, which a leak is not worth).
func (c *Client) scrub(err error) error {
	msg := err.Error()
	if scrubbed := c.scrubString(msg); scrubbed != msg {
		return errors.New(scrubbed)
	}
	return err
}
