// Package metrics defines cph-rekey's Prometheus metrics: what the
// pipeline measures as it runs (API calls, limiter waits, server outcomes)
// and collectors that read rotation progress and asynq queue state at
// scrape time, at a bounded cost to Redis.
//
//	reg := prometheus.NewRegistry()
//	m := metrics.New(reg)
//	m.APIRequest("cn-north-4", "UpdateKeypair", "200", 120*time.Millisecond)
//	reg.MustRegister(metrics.NewQueueCollector(inspector, []string{"rekey-submit"}, 30*time.Second))
//
// Every method of *Metrics does nothing on a nil receiver, so code that
// takes a *Metrics runs without one.
package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcomes are the values of the outcome label of cph_rekey_servers_total.
// Their series start at zero so rate() and increase() see the first event.
var outcomes = []string{"succeeded", "failed", "skipped", "cancelled", "retried"}

// Metrics holds the product's metrics. Use New to make one.
type Metrics struct {
	servers          *prometheus.CounterVec
	apiRequests      *prometheus.CounterVec
	apiDuration      *prometheus.HistogramVec
	throttled        *prometheus.CounterVec
	limiterWait      *prometheus.HistogramVec
	limiterRate      *prometheus.GaugeVec
	pollRounds       *prometheus.CounterVec
	chunksSubmitted  prometheus.Counter
	serversSubmitted prometheus.Counter
}

// New makes the metrics and registers them with reg. Like
// prometheus.MustRegister it panics when reg already holds metrics of the
// same names: that is a wiring mistake, found at start-up. A nil reg
// registers nothing (the metrics still count, for tests).
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		servers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cph_rekey_servers_total",
			Help: "Servers that reached an outcome: succeeded, failed, skipped, cancelled, or retried (sent to a new attempt).",
		}, []string{"outcome"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cph_rekey_api_requests_total",
			Help: "CPH API calls by API and result code (HTTP status, CPH/APIGW error code, or \"error\" for a transport failure).",
		}, []string{"region", "api", "code"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cph_rekey_api_request_duration_seconds",
			Help:    "Duration of CPH API calls.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}, []string{"region", "api"}),
		throttled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cph_rekey_api_throttled_total",
			Help: "CPH API calls refused by throttling (HTTP 429 or APIGW.0308).",
		}, []string{"region", "api"}),
		limiterWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cph_rekey_limiter_wait_seconds",
			Help:    "Time a call waited for a token of the fleet-wide rate limiter.",
			Buckets: []float64{0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60},
		}, []string{"region", "api"}),
		limiterRate: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cph_rekey_limiter_rate",
			Help: "Current rate of the fleet-wide limiter in requests per second (lowered after throttling, raised back as calls succeed).",
		}, []string{"region", "api"}),
		pollRounds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cph_rekey_poll_rounds_total",
			Help: "Poll rounds: one ListJobs round for one chunk.",
		}, []string{"api"}),
		chunksSubmitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cph_rekey_chunks_submitted_total",
			Help: "Chunks accepted by UpdateKeypair.",
		}),
		serversSubmitted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cph_rekey_servers_submitted_total",
			Help: "Servers in chunks accepted by UpdateKeypair.",
		}),
	}
	for _, o := range outcomes {
		m.servers.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.servers, m.apiRequests, m.apiDuration, m.throttled, m.limiterWait,
			m.limiterRate, m.pollRounds, m.chunksSubmitted, m.serversSubmitted)
	}
	return m
}

// ServerOutcome counts n servers that reached outcome.
func (m *Metrics) ServerOutcome(outcome string, n int) {
	if m == nil || n < 0 {
		return
	}
	m.servers.WithLabelValues(outcome).Add(float64(n))
}

// APIRequest records one CPH API call in region that ended with code
// after d.
func (m *Metrics) APIRequest(region, api, code string, d time.Duration) {
	if m == nil {
		return
	}
	m.apiRequests.WithLabelValues(region, api, code).Inc()
	m.apiDuration.WithLabelValues(region, api).Observe(d.Seconds())
}

// Throttled counts one call to api in region refused by throttling.
func (m *Metrics) Throttled(region, api string) {
	if m == nil {
		return
	}
	m.throttled.WithLabelValues(region, api).Inc()
}

// LimiterWait records how long a call to api in region waited for the
// limiter.
func (m *Metrics) LimiterWait(region, api string, d time.Duration) {
	if m == nil {
		return
	}
	m.limiterWait.WithLabelValues(region, api).Observe(d.Seconds())
}

// LimiterRate sets the limiter's current rate for api in region.
func (m *Metrics) LimiterRate(region, api string, perSecond float64) {
	if m == nil {
		return
	}
	m.limiterRate.WithLabelValues(region, api).Set(perSecond)
}

// PollRound counts one poll round made with api.
func (m *Metrics) PollRound(api string) {
	if m == nil {
		return
	}
	m.pollRounds.WithLabelValues(api).Inc()
}

// Submitted counts one chunk of n servers accepted by UpdateKeypair.
func (m *Metrics) Submitted(n int) {
	if m == nil || n < 0 {
		return
	}
	m.chunksSubmitted.Inc()
	m.serversSubmitted.Add(float64(n))
}
