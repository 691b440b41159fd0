package redisurl

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/redis/go-redis/v9"
)

// SetLogger sends go-redis's own log lines (failed dials, sentinel
// switches) to l as structured warnings with component=go-redis, instead
// of unstructured lines on stderr. A nil l drops them, for commands whose
// own messages already say what happens. go-redis's logger is global: call
// this once, before connecting.
func SetLogger(l *slog.Logger) {
	if l == nil {
		redis.SetLogger(voidLogger{})
		return
	}
	redis.SetLogger(slogLogger{l})
}

type slogLogger struct{ l *slog.Logger }

func (s slogLogger) Printf(ctx context.Context, format string, v ...any) {
	s.l.WarnContext(ctx, strings.TrimSpace(fmt.Sprintf(format, v...)), "component", "go-redis")
}

type voidLogger struct{}

func (voidLogger) Printf(context.Context, string, ...any) {}
