package cphsim_test

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/cph-rekey/cph-rekey/internal/cph"
	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
)

// Every API answer, an error included, waits at least Latency-LatencyJitter
// of real time. Only the lower bound is checked: a loaded machine may be
// slower, never faster.
func TestLatency(t *testing.T) {
	tests := []struct {
		name    string
		opts    cphsim.Options
		path    string
		atLeast time.Duration
	}{
		{"fixed", cphsim.Options{Latency: 100 * time.Millisecond}, "/servers", 100 * time.Millisecond},
		{"jitter", cphsim.Options{Latency: 150 * time.Millisecond, LatencyJitter: 50 * time.Millisecond}, "/servers", 100 * time.Millisecond},
		{"an error answer too", cphsim.Options{Latency: 100 * time.Millisecond}, "/jobs/unknown", 100 * time.Millisecond},
		{"a denied call too", cphsim.Options{Latency: 100 * time.Millisecond, Deny: []cphsim.API{cphsim.APIListServers}}, "/servers", 100 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			tt.opts.Servers = 1
			e := newEnv(t, tt.opts)
			for range 3 {
				start := time.Now()
				e.get(t, base+tt.path)
				if took := time.Since(start); took < tt.atLeast {
					t.Fatalf("answered after %s, before %s", took, tt.atLeast)
				}
			}
		})
	}
}

// A client that gives up does not hold the handler for the whole latency,
// and the write it gave up on is committed: its answer is what was lost.
func TestLatencyClientGoesAway(t *testing.T) {
	e := newEnv(t, cphsim.Options{Servers: 1, Latency: time.Hour})
	id := e.ids(t, 1)[0]
	body := keypairBody(t, "kp-new", id)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // the client gives up once the jobs exist, however slow the machine
		for e.sim.Stats().JobsCreated == 0 {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	req := e.request(t, http.MethodPut, base+"/servers/open-access", body).WithContext(ctx)
	cph.NewSigner(testAK, testSK).Sign(req, body, e.clock.Now())
	if _, err := e.srv.Client().Do(req); !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want the client's cancellation", err)
	}
	// Close waits for every handler: it would wait an hour if the wait
	// were not cut short.
	e.srv.Close()
	if st := e.sim.Stats(); st.JobsCreated != 1 {
		t.Errorf("jobs created %d, want the committed 1", st.JobsCreated)
	}
}

// The test aids do not wait: with an hour's latency, they answer. The
// client's minute is a ceiling against hanging, not a measure.
func TestLatencySparesTestAids(t *testing.T) {
	e := newEnv(t, cphsim.Options{Latency: time.Hour})
	client := &http.Client{Timeout: time.Minute}
	resp, err := client.Get(e.srv.URL + "/_sim/stats")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
}
