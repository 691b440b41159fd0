package e2e

import (
	"bytes"
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"

	"github.com/cph-rekey/cph-rekey/internal/cph/cphsim"
	"github.com/cph-rekey/cph-rekey/internal/tasks"
	"github.com/cph-rekey/cph-rekey/internal/testredis"
)

// ttyOutput collects what a command writes to its pseudo-terminal.
type ttyOutput struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	done chan struct{}
}

func readTTY(tty interface{ Read([]byte) (int, error) }) *ttyOutput {
	o := &ttyOutput{done: make(chan struct{})}
	go func() {
		defer close(o.done)
		buf := make([]byte, 4096)
		for {
			n, err := tty.Read(buf)
			o.mu.Lock()
			o.buf.Write(buf[:n])
			o.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	return o
}

func (o *ttyOutput) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.buf.String()
}

// TestStartShowsPlanProgress runs `enqueue start` on a fleet whose list
// takes a few seconds to read (62 pages at 20 a second, each answer 50 ms
// late): in an 80-column pseudo-terminal, stderr is one line redrawn in
// place that never wraps, ended by one new line when the plan is done; on a
// pipe it is a line every --progress-interval; stdout holds only the
// rotation id either way.
func TestStartShowsPlanProgress(t *testing.T) {
	r := testredis.Mini(t)
	f := startSim(t, cphsim.Options{Servers: 6000, Seed: 22, Latency: 50 * time.Millisecond})
	env := baseEnv(r, f)
	targets := writeTargets(t, f)

	t.Run("terminal", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(binDir, "enqueue"), "start", "--keypair", newKeypair, "--read-rate", "20/s:5",
			"--rotation-id", "tty-run", targets)
		cmd.Env = env
		var stdout bytes.Buffer
		cmd.Stdout = &stdout // stderr alone goes to the terminal
		tty, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 80, Rows: 24})
		if err != nil {
			t.Fatalf("start in a pseudo-terminal: %v", err)
		}
		out := readTTY(tty)
		if err := cmd.Wait(); err != nil {
			t.Fatalf("enqueue start: %v\n%s", err, out)
		}
		tty.Close()
		<-out.done
		text := out.String()
		if stdout.String() != "tty-run\n" {
			t.Errorf("stdout %q, want the rotation id alone", stdout.String())
		}
		// The terminal turns the one new line into \r\n.
		if !strings.HasSuffix(text, "\r\n") || strings.Count(text, "\n") != 1 {
			t.Errorf("the progress line left more than its last new line behind in 80 columns:\n%q", text)
		}
		redraws := strings.Split(strings.TrimSuffix(text, "\r\n"), "\r\033[K")
		if len(redraws) < 10 {
			t.Fatalf("%d redraws in a 3 s plan, want one per 100 ms: %q", len(redraws)-1, text)
		}
		for _, d := range redraws[1:] {
			if n := utf8.RuneCountInString(d); n >= 80 {
				t.Errorf("a redraw of %d columns does not fit 80: %q", n, d)
			}
			if !strings.Contains(d, "reading keypairs") || !strings.Contains(d, "pages") {
				t.Errorf("redraw %q does not say what it reads and how far", d)
			}
		}
		if last := redraws[len(redraws)-1]; !strings.Contains(last, "100.0%") || !strings.Contains(last, "62/62 pages") {
			t.Errorf("last redraw %q: want the whole list read", last)
		}
		t.Logf("a redraw mid-plan: %s", redraws[len(redraws)/2])
	})

	t.Run("pipe", func(t *testing.T) {
		out, code, stderr := enqueueCode(t, env, "start", "--keypair", newKeypair, "--read-rate", "20/s:5",
			"--progress-interval", "500ms", "--rotation-id", "pipe-run", targets)
		if code != 0 || out != "pipe-run\n" {
			t.Fatalf("exit %d, stdout %q: want 0 and the rotation id alone\n%s", code, out, stderr)
		}
		lines := strings.Split(strings.TrimSuffix(stderr, "\n"), "\n")
		if len(lines) < 4 || strings.Contains(stderr, "\r") {
			t.Fatalf("stderr %q: want a line every 500 ms of a 3 s plan", stderr)
		}
		for _, l := range lines {
			if !strings.HasPrefix(l, "enqueue: reading keypairs: ") || !strings.Contains(l, "pages/s") {
				t.Errorf("line %q", l)
			}
		}
		if !strings.Contains(lines[len(lines)-1], "62/62 pages") || !strings.Contains(lines[len(lines)-1], "6000/6000 matched") {
			t.Errorf("last line %q: want every page read and every target matched", lines[len(lines)-1])
		}
		if out, _, stderr := enqueueCode(t, env, "start", "--quiet", "--keypair", newKeypair, "--rotation-id", "quiet-run", targets); out != "quiet-run\n" || stderr != "" {
			t.Errorf("--quiet: stdout %q, stderr %q: want the id and nothing else", out, stderr)
		}
		if out := enqueue(t, env, "start", "--json", "--keypair", newKeypair, "--rotation-id", "json-run", targets); !strings.HasPrefix(out, `{"`) ||
			strings.Count(out, "\n") != 1 {
			t.Errorf("--json: stdout %q, want one JSON object", out)
		}
	})

	t.Run("interrupted", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(binDir, "enqueue"), "start", "--keypair", newKeypair, "--read-rate", "20/s:5",
			"--progress-interval", "200ms", "--rotation-id", "cut-short", targets)
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // a third of the way through the plan
		cmd.Process.Signal(syscall.SIGINT)
		err := cmd.Wait()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
			t.Errorf("exit %v, want 1", err)
		}
		if !strings.Contains(stderr.String(), "interrupted while reading the fleet (") ||
			!strings.Contains(stderr.String(), "nothing was written; run the same command again to start the rotation") {
			t.Errorf("stderr %q: want that nothing was written", stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("stdout %q", stdout.String())
		}
		if _, err := tasks.NewStore(r.Client(t), "").Rotation(context.Background(), "cut-short"); !errors.Is(err, tasks.ErrNotFound) {
			t.Errorf("rotation after the interrupted start: %v, want none", err)
		}
	})
}
