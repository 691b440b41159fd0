package metrics

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// commandCounter counts the Redis commands a client sends.
type commandCounter struct{ n atomic.Int64 }

func (c *commandCounter) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *commandCounter) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.n.Add(1)
		return next(ctx, cmd)
	}
}

func (c *commandCounter) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		c.n.Add(int64(len(cmds)))
		return next(ctx, cmds)
	}
}

func TestQueueCollector(t *testing.T) {
	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
		ctx := context.Background()
		enq := asynq.NewClient(r.ConnOpt())
		t.Cleanup(func() { enq.Close() })
		for i := range 3 {
			task := asynq.NewTask("rotation:submit", fmt.Appendf(nil, `{"rotation":"r-1","chunk":%d,"attempt":1,"servers":50}`, i))
			if _, err := enq.EnqueueContext(ctx, task, asynq.Queue("rekey-submit")); err != nil {
				t.Fatalf("enqueue: %v", err)
			}
		}
		if _, err := enq.EnqueueContext(ctx, asynq.NewTask("rotation:poll", []byte(`{}`)), asynq.Queue("rekey-poll"), asynq.ProcessIn(time.Hour)); err != nil {
			t.Fatalf("enqueue: %v", err)
		}

		rdb := r.Client(t)
		var count commandCounter
		rdb.AddHook(&count)
		insp := asynq.NewInspectorFromRedisClient(rdb)
		if err := insp.PauseQueue("rekey-poll"); err != nil {
			t.Fatalf("pause: %v", err)
		}

		clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
		c := NewQueueCollector(insp, []string{"rekey-poll", "rekey-submit", "rekey-events"}, time.Minute).(*queueCollector)
		c.cache.now = clock.Now
		reg := prometheus.NewPedanticRegistry()
		reg.MustRegister(c)

		type labels = map[string]string
		checks := []struct {
			name   string
			labels labels
			want   float64
		}{
			{"asynq_queue_size", labels{"queue": "rekey-submit", "state": "pending"}, 3},
			{"asynq_queue_size", labels{"queue": "rekey-submit", "state": "scheduled"}, 0},
			{"asynq_queue_size", labels{"queue": "rekey-poll", "state": "scheduled"}, 1},
			{"asynq_queue_size", labels{"queue": "rekey-events", "state": "pending"}, 0},
			{"asynq_queue_paused", labels{"queue": "rekey-poll"}, 1},
			{"asynq_queue_paused", labels{"queue": "rekey-submit"}, 0},
			{"asynq_tasks_processed_total", labels{"queue": "rekey-submit"}, 0},
			{"asynq_tasks_failed_total", labels{"queue": "rekey-submit"}, 0},
			{"cph_rekey_collector_up", labels{"collector": "queues"}, 1},
		}
		before := count.n.Load()
		for _, ck := range checks {
			if got := mustValue(t, reg, ck.name, ck.labels); got != ck.want {
				t.Errorf("%s%v = %v, want %v", ck.name, ck.labels, got, ck.want)
			}
		}
		if _, ok := value(t, reg, "asynq_queue_latency_seconds", labels{"queue": "rekey-submit"}); !ok {
			t.Error("asynq_queue_latency_seconds{queue=rekey-submit} not gathered")
		}
		if count.n.Load() == before {
			t.Fatal("the first scrapes sent no Redis command")
		}

		// More scrapes within the interval are served from the cache,
		// even as the queue changes.
		if _, err := enq.EnqueueContext(ctx, asynq.NewTask("rotation:submit", []byte(`{"chunk":9}`)), asynq.Queue("rekey-submit")); err != nil {
			t.Fatalf("enqueue: %v", err)
		}
		clock.Add(59 * time.Second)
		before = count.n.Load()
		for range 5 {
			if got := mustValue(t, reg, "asynq_queue_size", labels{"queue": "rekey-submit", "state": "pending"}); got != 3 {
				t.Errorf("cached pending = %v, want 3", got)
			}
		}
		if n := count.n.Load() - before; n != 0 {
			t.Errorf("scrapes within the interval sent %d Redis commands, want 0", n)
		}

		// After the interval, one scrape reads Redis again.
		clock.Add(time.Second)
		before = count.n.Load()
		if got := mustValue(t, reg, "asynq_queue_size", labels{"queue": "rekey-submit", "state": "pending"}); got != 4 {
			t.Errorf("pending after the interval = %v, want 4", got)
		}
		if n := count.n.Load() - before; n == 0 {
			t.Error("a scrape after the interval sent no Redis command")
		}
	})
}

func TestQueueCollectorAllQueues(t *testing.T) {
	r := testredis.Mini(t)
	enq := asynq.NewClient(r.ConnOpt())
	t.Cleanup(func() { enq.Close() })
	if _, err := enq.Enqueue(asynq.NewTask("rotation:finished", []byte(`{}`)), asynq.Queue("rekey-events")); err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	insp := asynq.NewInspectorFromRedisClient(r.Client(t))
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewQueueCollector(insp, nil, 0))
	if got := mustValue(t, reg, "asynq_queue_size", map[string]string{"queue": "rekey-events", "state": "pending"}); got != 1 {
		t.Errorf("pending = %v, want 1", got)
	}
}

func TestQueueCollectorRedisDown(t *testing.T) {
	r := testredis.Mini(t)
	rdb := redis.NewClient(&redis.Options{Addr: r.Addr, MaxRetries: -1})
	t.Cleanup(func() { rdb.Close() })
	r.Mini.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewQueueCollector(asynq.NewInspectorFromRedisClient(rdb), []string{"rekey-submit"}, time.Minute))
	fams, err := reg.Gather()
	if err == nil {
		t.Fatal("gather with Redis down: no error")
	}
	up := -1.0
	for _, f := range fams {
		if f.GetName() == "cph_rekey_collector_up" {
			up = f.GetMetric()[0].GetGauge().GetValue()
		}
	}
	if up != 0 {
		t.Errorf("cph_rekey_collector_up = %v, want 0", up)
	}
}

func TestProgressCollector(t *testing.T) {
	var calls atomic.Int64
	var fail atomic.Bool
	fn := func(ctx context.Context) ([]RotationProgress, error) {
		calls.Add(1)
		if _, ok := ctx.Deadline(); !ok {
			t.Error("progress func called without a deadline")
		}
		if fail.Load() {
			return nil, errors.New("redis: connection refused")
		}
		return []RotationProgress{
			{Rotation: "r-1", State: "running", States: map[string]int64{"pending": 10, "succeeded": 90}},
			{Rotation: "r-2", State: "completed_with_errors", States: map[string]int64{"running": 5}},
		}, nil
	}
	clock := &fakeClock{now: time.Unix(1_700_000_000, 0)}
	c := NewProgressCollector(fn, 15*time.Second).(*progressCollector)
	c.cache.now = clock.Now
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(c)

	type labels = map[string]string
	tests := []struct {
		labels labels
		want   float64
	}{
		{labels{"rotation": "r-1", "state": "pending"}, 10},
		{labels{"rotation": "r-1", "state": "succeeded"}, 90},
		{labels{"rotation": "r-2", "state": "running"}, 5},
	}
	for _, tt := range tests {
		if got := mustValue(t, reg, "cph_rekey_rotation_servers", tt.labels); got != tt.want {
			t.Errorf("cph_rekey_rotation_servers%v = %v, want %v", tt.labels, got, tt.want)
		}
	}
	for _, tt := range []struct {
		labels labels
		want   float64
	}{
		{labels{"rotation": "r-1", "state": "running"}, 1},
		{labels{"rotation": "r-2", "state": "completed_with_errors"}, 1},
	} {
		if got := mustValue(t, reg, "cph_rekey_rotation_state", tt.labels); got != tt.want {
			t.Errorf("cph_rekey_rotation_state%v = %v, want %v", tt.labels, got, tt.want)
		}
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("three scrapes within the interval called the func %d times, want 1", n)
	}

	fail.Store(true)
	clock.Add(15 * time.Second)
	if _, err := reg.Gather(); err == nil {
		t.Error("gather with a failing progress func: no error")
	}
	if n := calls.Load(); n != 2 {
		t.Errorf("calls after the interval = %d, want 2", n)
	}
	// The failure is cached too: a Redis in trouble is not read at every scrape.
	reg.Gather()
	if n := calls.Load(); n != 2 {
		t.Errorf("calls after a cached failure = %d, want 2", n)
	}
}

func TestCollectorsShareUpMetric(t *testing.T) {
	r := testredis.Mini(t)
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(
		NewQueueCollector(asynq.NewInspectorFromRedisClient(r.Client(t)), []string{"rekey-submit"}, time.Minute),
		NewProgressCollector(func(context.Context) ([]RotationProgress, error) { return nil, nil }, time.Minute),
	)
	for _, c := range []string{"queues", "progress"} {
		if got := mustValue(t, reg, "cph_rekey_collector_up", map[string]string{"collector": c}); got != 1 {
			t.Errorf("cph_rekey_collector_up{collector=%q} = %v, want 1", c, got)
		}
	}
}

func TestCollectorsWithoutSource(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewProgressCollector(nil, 0))
	if _, err := reg.Gather(); err == nil {
		t.Error("progress collector without a func: gather gave no error")
	}
	reg = prometheus.NewRegistry()
	reg.MustRegister(NewQueueCollector(nil, nil, 0))
	if _, err := reg.Gather(); err == nil {
		t.Error("queue collector without an inspector: gather gave no error")
	}
}
