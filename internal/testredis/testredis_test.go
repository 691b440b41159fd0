package testredis

import (
	"context"
	"testing"
)

func TestEach(t *testing.T) {
	Each(t, func(t *testing.T, r *Redis) {
		ctx := context.Background()
		c := r.Client(t)
		if n, _ := c.DBSize(ctx).Result(); n != 0 {
			t.Fatalf("fresh database holds %d keys", n)
		}
		if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
			t.Fatal(err)
		}
		if got := c.Get(ctx, "k").Val(); got != "v" {
			t.Fatalf("got %q", got)
		}
	})
}
