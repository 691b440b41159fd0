package rekey_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

// TestHistoryNamesEachActor: the start, and a pause, resume and cancel by
// different actors (Request.Actor, WithActor) each show who did them, in
// order, in Client.History and in the completion event; a control by an
// actor that is not printable text is refused and changes nothing.
func TestHistoryNamesEachActor(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 12, NoWorker: true})
	c := env.Client
	ctx := context.Background()
	as := func(actor string) context.Context { return rekey.WithActor(ctx, actor) }
	st, err := c.Start(as("ignored"), rekey.Request{ID: "who", Keypair: "kp-new", Targets: env.Targets(), Actor: "alice",
		KeypairImported: []string{"cn-north-4/p1"}})
	if err != nil {
		t.Fatal(err)
	}
	var ie *rekey.InputError
	if err := c.Pause(as("bob\x1b[2J"), st.Rotation.ID); !errors.As(err, &ie) {
		t.Fatalf("Pause by a bad actor: %v, want an *InputError", err)
	}
	if err := c.Pause(as("bob"), st.Rotation.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Resume(as("carol"), st.Rotation.ID, rekey.ResumeOptions{MaxErrors: &rekey.Size{N: 4}}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cancel(as("dave"), st.Rotation.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Cancel(as("erin"), st.Rotation.ID); err != nil {
		t.Fatal(err) // cancelled already: no entry
	}
	hist, err := c.History(ctx, st.Rotation.ID)
	if err != nil {
		t.Fatal(err)
	}
	want := "created alice, keypair_imported alice, wave_started cph-rekey, paused bob, resumed carol, cancelled dave, finished cph-rekey"
	if got := kinds(hist); got != want {
		t.Fatalf("history %s\nwant    %s", got, want)
	}
	if d := hist[4].Detail; !strings.Contains(d, "max errors 1 -> 4") {
		t.Fatalf("resume's detail %q: want the new budget", d)
	}
	e, err := env.Event(ctx, st.Rotation.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got := kinds(e.History); got != want {
		t.Fatalf("event's history %s\nwant           %s", got, want)
	}
	if _, err := c.History(ctx, "nope"); !errors.Is(err, rekey.ErrNotFound) {
		t.Fatalf("History of no rotation: %v, want ErrNotFound", err)
	}
}

func kinds(hist []rekey.HistoryEntry) string {
	var s []string
	for _, h := range hist {
		s = append(s, string(h.Kind)+" "+h.Actor)
	}
	return strings.Join(s, ", ")
}
