package e2e

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// TestWatchRedrawsInPlace runs `enqueue status --watch` in a pseudo-
// terminal of 80 columns while a rotation runs: every redraw fits the
// width, so "\r\033[K" redraws the one line in place and no redraw ever
// leaves a new line behind, until the rotation ends.
func TestWatchRedrawsInPlace(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 600, Seed: 12, JobLatency: time.Second, UpdateKeypairQuota: 2})
	env := baseEnv(r, f)
	st := startRotation(t, env, "--chunk-size", "20", writeTargets(t, f))
	startWorker(t, env, "--submit-rate", "2/s:1")

	cmd := exec.Command(filepath.Join(binDir, "enqueue"), "status", "--watch", "--interval", "200ms", st.Rotation)
	cmd.Env = env
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 80, Rows: 24})
	if err != nil {
		t.Fatalf("start in a pseudo-terminal: %v", err)
	}
	var (
		mu  sync.Mutex
		out bytes.Buffer
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			mu.Lock()
			out.Write(buf[:n])
			mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	time.Sleep(3 * time.Second) // about 15 redraws while chunks are submitted
	cmd.Process.Kill()
	cmd.Wait()
	tty.Close()
	<-done
	mu.Lock()
	text := out.String()
	mu.Unlock()

	if strings.Contains(text, "\n") {
		t.Errorf("--watch left a new line behind in 80 columns:\n%q", text)
	}
	redraws := strings.Split(text, "\r\033[K")
	if len(redraws) < 5 {
		t.Fatalf("%d redraws in 3 s, want one per 200 ms: %q", len(redraws)-1, text)
	}
	for _, d := range redraws[1:] {
		if n := utf8.RuneCountInString(d); n >= 80 {
			t.Errorf("a redraw of %d columns does not fit 80: %q", n, d)
		}
		if !strings.Contains(d, "% ") || !strings.Contains(d, "done") {
			t.Errorf("redraw %q does not start with the bar, percent and done count", d)
		}
	}
	t.Logf("last redraw: %s", redraws[len(redraws)-1])
}
