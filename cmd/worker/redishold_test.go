package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// TestHoldWhileRedisDown: a task that ends while Redis is down returns its
// handler's result only once a ping succeeds; with Redis up it returns at
// once; a cancelled context hands it back without waiting.
func TestHoldWhileRedisDown(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	boom := errors.New("handler failed")
	handler := asynq.HandlerFunc(func(context.Context, *asynq.Task) error { return boom })
	task := asynq.NewTask("t", nil)

	var pings atomic.Int32
	downFor := int32(3)
	ping := func(context.Context, string) error {
		if pings.Add(1) <= downFor {
			return errors.New("dial tcp: connection refused")
		}
		return nil
	}
	h := holdWhileRedisDown(ping, time.Millisecond, log)(handler)
	if err := h.ProcessTask(context.Background(), task); !errors.Is(err, boom) {
		t.Fatalf("ProcessTask = %v, want the handler's error", err)
	}
	if n := pings.Load(); n != downFor+1 {
		t.Fatalf("%d pings, want %d: held until the first successful ping", n, downFor+1)
	}

	pings.Store(0)
	downFor = 0
	if err := h.ProcessTask(context.Background(), task); !errors.Is(err, boom) || pings.Load() != 1 {
		t.Fatalf("Redis up: ProcessTask = %v after %d pings, want the handler's error after 1", err, pings.Load())
	}

	never := holdWhileRedisDown(func(context.Context, string) error { return errors.New("down") }, time.Millisecond, log)(handler)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- never.ProcessTask(ctx, task) }()
	cancel()
	if err := <-done; !errors.Is(err, boom) {
		t.Fatalf("cancelled: ProcessTask = %v, want the handler's error", err)
	}
}

// TestRedisFlagsInHelp: --help documents the Redis flags and their
// environment variables.
func TestRedisFlagsInHelp(t *testing.T) {
	code, _, stderr := runWorkerCmd(t, nil, "--help")
	if code != exitOK {
		t.Fatalf("--help exit %d", code)
	}
	for _, want := range []string{"REDIS_URL", "redis-sentinel://", "redis-cluster://", "--redis-ca", "REKEY_REDIS_CA", "REKEY_REDIS_CERT", "REKEY_REDIS_KEY", "REKEY_REDIS_USERNAME", "REKEY_REDIS_PASSWORD"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("--help does not mention %s", want)
		}
	}
}

func TestQueueProbe(t *testing.T) {
	m := miniredis.RunT(t)
	rdb := redis.NewClient(&redis.Options{Addr: m.Addr()})
	defer rdb.Close()
	probe := queueProbe(rdb)
	for _, q := range []string{"", "rekey-submit"} {
		if err := probe(context.Background(), q); err != nil {
			t.Fatalf("probe(%q) with Redis up: %v", q, err)
		}
	}
	m.Close()
	if err := probe(context.Background(), "rekey-submit"); err == nil {
		t.Fatal("probe with Redis down succeeded")
	}
}
