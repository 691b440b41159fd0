package ratelimit

import (
	"context"
	"testing"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"

	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// eachRedis runs a benchmark on miniredis and, when CPH_REKEY_TEST_REDIS is
// set, on a real Redis.
func eachRedis(b *testing.B, fn func(b *testing.B, c *redis.Client)) {
	b.Run("miniredis", func(b *testing.B) { fn(b, testredis.Mini(b).Client(b)) })
	b.Run("redis", func(b *testing.B) { fn(b, testredis.Real(b).Client(b)) })
}

// A limit no benchmark reaches, so every decision is a grant.
var benchLimit = Limit{Rate: 1e6, Period: time.Second, Burst: 1e6}

// BenchmarkWait measures decisions per second of Wait on one key (one
// script run each), from one goroutine and from several.
func BenchmarkWait(b *testing.B) {
	eachRedis(b, func(b *testing.B, c *redis.Client) {
		ctx := context.Background()
		l := newLimiter(b, c, benchLimit, Options{})
		b.Run("goroutines=1", func(b *testing.B) {
			for b.Loop() {
				if err := l.Wait(ctx, testKey); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
		b.Run("goroutines=8", func(b *testing.B) {
			b.SetParallelism(4) // ×GOMAXPROCS, 8 on the 2-core reference machine
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := l.Wait(ctx, testKey); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	})
}

// BenchmarkRedisRate measures the design this package chose not to use:
// redis_rate's Allow plus a read of the shared adaptive state (rate and
// cooldown), which must come first because Allow takes the rate as an
// argument, so two round trips per decision instead of one.
func BenchmarkRedisRate(b *testing.B) {
	eachRedis(b, func(b *testing.B, c *redis.Client) {
		ctx := context.Background()
		rl := redis_rate.NewLimiter(c)
		lim := redis_rate.Limit{Rate: 1e9, Period: time.Second, Burst: 1e9}
		b.Run("allow", func(b *testing.B) {
			for b.Loop() {
				if _, err := rl.Allow(ctx, "bench", lim); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
		b.Run("allow+state", func(b *testing.B) {
			for b.Loop() {
				if err := c.HMGet(ctx, "bench:aimd", "rate", "cooldown").Err(); err != nil {
					b.Fatal(err)
				}
				if _, err := rl.Allow(ctx, "bench", lim); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
		})
	})
}
