// Package testredis gives tests a Redis to talk to: an in-process miniredis
// by default, and a private database on a real Redis server when the
// environment variable CPH_REKEY_TEST_REDIS names one (host:port).
//
// Real-Redis databases are leased, so several test processes (go test runs
// packages in parallel) never share one: a lease is a key in database 0
// that expires on its own if a test process dies, and the database is
// flushed when it is taken and when it is given back.
//
//	testredis.Each(t, func(t *testing.T, r *testredis.Redis) {
//		rdb := r.Client(t)
//		...
//	})
package testredis

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// EnvAddr names the environment variable that points tests at a real Redis.
const EnvAddr = "CPH_REKEY_TEST_REDIS"

// Redis is one Redis database reserved for a test.
type Redis struct {
	Addr string // host:port
	DB   int
	// Mini is the in-process server, or nil on a real Redis.
	Mini *miniredis.Miniredis
}

// Real reports whether r is a real Redis server.
func (r *Redis) Real() bool { return r.Mini == nil }

// URL returns a redis:// URL for r, as REDIS_URL takes it.
func (r *Redis) URL() string { return fmt.Sprintf("redis://%s/%d", r.Addr, r.DB) }

// Client returns a go-redis client for r, closed when the test ends.
func (r *Redis) Client(t testing.TB) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, DB: r.DB})
	t.Cleanup(func() { c.Close() })
	return c
}

// ConnOpt returns asynq's connection options for r.
func (r *Redis) ConnOpt() asynq.RedisClientOpt {
	return asynq.RedisClientOpt{Addr: r.Addr, DB: r.DB}
}

// Mini starts an in-process miniredis for the test.
func Mini(t testing.TB) *Redis {
	t.Helper()
	m := miniredis.RunT(t)
	return &Redis{Addr: m.Addr(), Mini: m}
}

// Real leases a private database on the Redis named by CPH_REKEY_TEST_REDIS,
// or skips the test when that variable is unset.
func Real(t testing.TB) *Redis {
	t.Helper()
	addr := os.Getenv(EnvAddr)
	if addr == "" {
		t.Skipf("%s is not set: real-Redis test skipped", EnvAddr)
	}
	ctx := context.Background()
	admin := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { admin.Close() })
	if err := admin.Ping(ctx).Err(); err != nil {
		t.Fatalf("%s=%s: %v", EnvAddr, addr, err)
	}
	const leaseTTL = 15 * time.Minute
	deadline := time.Now().Add(5 * time.Minute)
	for {
		for db := 1; db < 16; db++ {
			key := "cph-rekey-test-lease:" + strconv.Itoa(db)
			ok, err := admin.SetNX(ctx, key, os.Getpid(), leaseTTL).Result()
			if err != nil {
				t.Fatalf("lease test database: %v", err)
			}
			if !ok {
				continue
			}
			r := &Redis{Addr: addr, DB: db}
			flush(t, r)
			t.Cleanup(func() {
				flush(t, r)
				admin.Del(context.Background(), key)
			})
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("no free test database on %s after 5 minutes", addr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func flush(t testing.TB, r *Redis) {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: r.Addr, DB: r.DB})
	defer c.Close()
	if err := c.FlushDB(context.Background()).Err(); err != nil {
		t.Fatalf("flush test database %d: %v", r.DB, err)
	}
}

// Each runs fn as subtest "miniredis" and, when CPH_REKEY_TEST_REDIS is set,
// again as subtest "redis" on a real server.
func Each(t *testing.T, fn func(t *testing.T, r *Redis)) {
	t.Helper()
	t.Run("miniredis", func(t *testing.T) { fn(t, Mini(t)) })
	t.Run("redis", func(t *testing.T) { fn(t, Real(t)) })
}
