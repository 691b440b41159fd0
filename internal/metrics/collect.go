package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
)

// DefaultQueueInterval is how often the queue collector reads Redis when
// NewQueueCollector is given no interval.
const DefaultQueueInterval = 30 * time.Second

// progressTimeout bounds one read of rotation progress; it is below
// Prometheus' default scrape timeout of 10s.
const progressTimeout = 5 * time.Second

// upDesc describes cph_rekey_collector_up for one collector. Both
// collectors share the name, told apart by a constant label, so their
// help text must be the same.
func upDesc(collector string) *prometheus.Desc {
	return prometheus.NewDesc("cph_rekey_collector_up",
		"1 if the collector's last read of Redis succeeded, 0 if it failed.",
		nil, prometheus.Labels{"collector": collector})
}

func upValue(err error) float64 {
	if err != nil {
		return 0
	}
	return 1
}

// cache keeps the result of an expensive read for a while, so scrapes,
// however frequent and from however many Prometheus servers, cost Redis at
// most one read per interval. Failures are kept too: a Redis in trouble is
// not hammered by every scrape.
type cache[T any] struct {
	every time.Duration
	now   func() time.Time

	mu     sync.Mutex // held during the read, so concurrent scrapes share it
	filled bool
	at     time.Time
	val    T
	err    error
}

func (c *cache[T]) get(read func() (T, error)) (T, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if now := c.now(); !c.filled || now.Sub(c.at) >= c.every {
		c.val, c.err = read()
		c.at, c.filled = now, true
	}
	return c.val, c.err
}

// RotationProgress is one rotation's state (running, paused, succeeded,
// completed_with_errors, failed, cancelled) and its server counts by state
// (pending, running, succeeded, failed, skipped, cancelled).
type RotationProgress struct {
	Rotation string
	State    string
	States   map[string]int64
}

type progressCollector struct {
	fn    func(ctx context.Context) ([]RotationProgress, error)
	cache cache[[]RotationProgress]
	desc  *prometheus.Desc
	state *prometheus.Desc
	up    *prometheus.Desc
}

// NewProgressCollector returns a collector of cph_rekey_rotation_servers
// {rotation,state} and cph_rekey_rotation_state{rotation,state} (1 for the
// rotation's current state), read by calling fn at scrape time, at most once per
// minInterval (a zero minInterval reads at every scrape). fn should return
// only the rotations worth watching (unfinished and recent ones): every
// rotation it returns is a set of series.
func NewProgressCollector(fn func(ctx context.Context) ([]RotationProgress, error), minInterval time.Duration) prometheus.Collector {
	return &progressCollector{
		fn:    fn,
		cache: cache[[]RotationProgress]{every: minInterval, now: time.Now},
		desc: prometheus.NewDesc("cph_rekey_rotation_servers",
			"Servers of a rotation in each state.", []string{"rotation", "state"}, nil),
		state: prometheus.NewDesc("cph_rekey_rotation_state",
			"A rotation's state: 1 for the state it is in (a rotation halted by its error budget is failed before it has finished).",
			[]string{"rotation", "state"}, nil),
		up: upDesc("progress"),
	}
}

func (c *progressCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.desc
	ch <- c.state
	ch <- c.up
}

func (c *progressCollector) Collect(ch chan<- prometheus.Metric) {
	rots, err := c.cache.get(func() ([]RotationProgress, error) {
		if c.fn == nil {
			return nil, errors.New("no progress function given to NewProgressCollector")
		}
		ctx, cancel := context.WithTimeout(context.Background(), progressTimeout)
		defer cancel()
		return c.fn(ctx)
	})
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, upValue(err))
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, fmt.Errorf("rotation progress: %w", err))
		return
	}
	for _, r := range rots {
		if r.State != "" {
			ch <- prometheus.MustNewConstMetric(c.state, prometheus.GaugeValue, 1, r.Rotation, r.State)
		}
		for state, n := range r.States {
			ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), r.Rotation, state)
		}
	}
}

// queueStates are the values of asynq_queue_size's state label.
var queueStates = []string{"pending", "active", "scheduled", "retry", "archived", "completed", "aggregating"}

type queueCollector struct {
	insp   *asynq.Inspector
	queues []string
	cache  cache[[]*asynq.QueueInfo]

	size, latency, memory, processed, failed, paused, up *prometheus.Desc
}

// NewQueueCollector returns a collector of asynq's queue state, read with
// insp.GetQueueInfo at most once per minInterval (DefaultQueueInterval if
// zero or less) and served from a cache between reads: GetQueueInfo is
// costly on a large queue (it samples MEMORY USAGE and walks groups), and
// the metrics exporter of asynq/x calls it at every scrape. Queues lists
// the queues to report, nil meaning every queue in Redis; a listed queue
// that holds no task yet is reported as empty.
//
// Metrics: asynq_queue_size{queue,state}, asynq_queue_latency_seconds,
// asynq_queue_memory_usage_approx_bytes, asynq_tasks_processed_total,
// asynq_tasks_failed_total and asynq_queue_paused, all by queue.
func NewQueueCollector(insp *asynq.Inspector, queues []string, minInterval time.Duration) prometheus.Collector {
	if minInterval <= 0 {
		minInterval = DefaultQueueInterval
	}
	q := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append([]string{"queue"}, labels...), nil)
	}
	return &queueCollector{
		insp:      insp,
		queues:    append([]string(nil), queues...),
		cache:     cache[[]*asynq.QueueInfo]{every: minInterval, now: time.Now},
		size:      q("asynq_queue_size", "Tasks in the queue by state.", "state"),
		latency:   q("asynq_queue_latency_seconds", "Age of the oldest pending task in the queue."),
		memory:    q("asynq_queue_memory_usage_approx_bytes", "Approximate Redis memory used by the queue and its tasks (sampled)."),
		processed: q("asynq_tasks_processed_total", "Tasks processed from the queue, succeeded or failed (cumulative)."),
		failed:    q("asynq_tasks_failed_total", "Tasks from the queue whose processing failed (cumulative)."),
		paused:    q("asynq_queue_paused", "1 if the queue is paused, else 0."),
		up:        upDesc("queues"),
	}
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.size, c.latency, c.memory, c.processed, c.failed, c.paused, c.up} {
		ch <- d
	}
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	infos, err := c.cache.get(c.read)
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, upValue(err))
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.size, err)
		return
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	for _, qi := range infos {
		byState := []int{qi.Pending, qi.Active, qi.Scheduled, qi.Retry, qi.Archived, qi.Completed, qi.Aggregating}
		for i, state := range queueStates {
			gauge(c.size, float64(byState[i]), qi.Queue, state)
		}
		gauge(c.latency, qi.Latency.Seconds(), qi.Queue)
		gauge(c.memory, float64(qi.MemoryUsage), qi.Queue)
		ch <- prometheus.MustNewConstMetric(c.processed, prometheus.CounterValue, float64(qi.ProcessedTotal), qi.Queue)
		ch <- prometheus.MustNewConstMetric(c.failed, prometheus.CounterValue, float64(qi.FailedTotal), qi.Queue)
		paused := 0.0
		if qi.Paused {
			paused = 1
		}
		gauge(c.paused, paused, qi.Queue)
	}
}

// read fetches the info of every reported queue. asynq creates a queue's
// keys with its first task, and GetQueueInfo fails on a queue it does not
// know, so the known queues are listed first.
func (c *queueCollector) read() ([]*asynq.QueueInfo, error) {
	if c.insp == nil {
		return nil, errors.New("no inspector given to NewQueueCollector")
	}
	known, err := c.insp.Queues()
	if err != nil {
		return nil, fmt.Errorf("list asynq queues: %w", err)
	}
	queues := c.queues
	if queues == nil {
		queues = known
	}
	exists := make(map[string]bool, len(known))
	for _, q := range known {
		exists[q] = true
	}
	infos := make([]*asynq.QueueInfo, 0, len(queues))
	for _, q := range queues {
		if !exists[q] {
			infos = append(infos, &asynq.QueueInfo{Queue: q})
			continue
		}
		qi, err := c.insp.GetQueueInfo(q)
		if err != nil {
			return nil, fmt.Errorf("asynq queue info %s: %w", q, err)
		}
		infos = append(infos, qi)
	}
	return infos, nil
}
