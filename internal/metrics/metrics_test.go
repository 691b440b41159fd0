package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNilMetricsIsSafe(t *testing.T) {
	var m *Metrics
	m.ServerOutcome("succeeded", 3)
	m.APIRequest("cn-north-4", "UpdateKeypair", "200", time.Second)
	m.Throttled("cn-north-4", "ListJobs")
	m.LimiterWait("cn-north-4", "ListJobs", time.Millisecond)
	m.LimiterRate("cn-north-4", "ListJobs", 10)
	m.PollRound("ListJobs")
	m.Submitted(50)
}

func TestMetricsValues(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	m := New(reg)
	m.ServerOutcome("succeeded", 48)
	m.ServerOutcome("failed", 2)
	m.ServerOutcome("failed", -1) // ignored: a counter cannot go down
	m.APIRequest("cn-north-4", "UpdateKeypair", "200", 300*time.Millisecond)
	m.APIRequest("cn-north-4", "UpdateKeypair", "APIGW.0308", 40*time.Millisecond)
	m.APIRequest("cn-east-3", "UpdateKeypair", "200", 40*time.Millisecond)
	m.Throttled("cn-north-4", "UpdateKeypair")
	m.LimiterWait("cn-north-4", "ListJobs", 2*time.Second)
	m.LimiterRate("cn-north-4", "ListJobs", 7.5)
	m.LimiterRate("cn-east-3", "ListJobs", 20)
	m.PollRound("ListJobs")
	m.PollRound("ListJobs")
	m.Submitted(50)
	m.Submitted(20)

	type labels = map[string]string
	tests := []struct {
		name   string
		labels labels
		want   float64
	}{
		{"cph_rekey_servers_total", labels{"outcome": "succeeded"}, 48},
		{"cph_rekey_servers_total", labels{"outcome": "failed"}, 2},
		{"cph_rekey_servers_total", labels{"outcome": "retried"}, 0},
		{"cph_rekey_servers_total", labels{"outcome": "cancelled"}, 0},
		{"cph_rekey_api_requests_total", labels{"region": "cn-north-4", "api": "UpdateKeypair", "code": "200"}, 1},
		{"cph_rekey_api_requests_total", labels{"region": "cn-north-4", "api": "UpdateKeypair", "code": "APIGW.0308"}, 1},
		{"cph_rekey_api_requests_total", labels{"region": "cn-east-3", "api": "UpdateKeypair", "code": "200"}, 1},
		{"cph_rekey_api_request_duration_seconds", labels{"region": "cn-north-4", "api": "UpdateKeypair"}, 2},
		{"cph_rekey_api_throttled_total", labels{"region": "cn-north-4", "api": "UpdateKeypair"}, 1},
		{"cph_rekey_limiter_wait_seconds", labels{"region": "cn-north-4", "api": "ListJobs"}, 1},
		{"cph_rekey_limiter_rate", labels{"region": "cn-north-4", "api": "ListJobs"}, 7.5},
		{"cph_rekey_limiter_rate", labels{"region": "cn-east-3", "api": "ListJobs"}, 20},
		{"cph_rekey_poll_rounds_total", labels{"api": "ListJobs"}, 2},
		{"cph_rekey_chunks_submitted_total", nil, 2},
		{"cph_rekey_servers_submitted_total", nil, 70},
	}
	for _, tt := range tests {
		if got := mustValue(t, reg, tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v = %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
}

func TestNewWithoutRegistryStillCounts(t *testing.T) {
	m := New(nil)
	m.Submitted(3)
	reg := prometheus.NewRegistry()
	reg.MustRegister(m.serversSubmitted)
	if got := mustValue(t, reg, "cph_rekey_servers_submitted_total", nil); got != 3 {
		t.Errorf("servers submitted = %v, want 3", got)
	}
}
