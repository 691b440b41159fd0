package rekey_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cph-rekey/cph-rekey/rekey"
	"github.com/cph-rekey/cph-rekey/rekey/rekeytest"
)

func TestGenerateKeypair(t *testing.T) {
	k, err := rekey.GenerateKeypair("kp-2026")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(k.PublicKey, "ssh-ed25519 ") || !strings.HasSuffix(k.PublicKey, " kp-2026") || !strings.HasPrefix(k.Fingerprint, "SHA256:") {
		t.Errorf("public half %q, %q", k.PublicKey, k.Fingerprint)
	}
	path := filepath.Join(t.TempDir(), "key")
	if err := k.WritePrivateKey(path); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	if !strings.HasPrefix(string(data), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Errorf("file does not hold an OpenSSH private key: %.40q", data)
	}
	body := strings.Split(string(data), "\n")[1]
	for _, s := range []string{fmt.Sprint(k), fmt.Sprintf("%v %+v %#v", k, k, k), k.PublicKey} {
		if strings.Contains(s, body) || strings.Contains(s, "PRIVATE") {
			t.Errorf("private key printed: %q", s)
		}
	}
	other, err := rekey.GenerateKeypair("kp-2026")
	if err != nil {
		t.Fatal(err)
	}
	if err := other.WritePrivateKey(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("overwrite: %v, want fs.ErrExist", err)
	}
	if again, _ := os.ReadFile(path); string(again) != string(data) {
		t.Error("the file was overwritten")
	}
}

func TestImportKeypair(t *testing.T) {
	t.Parallel()
	env := rekeytest.New(t, rekeytest.Options{Servers: 1, NoWorker: true, Keypairs: []string{rekeytest.FleetKeypair}})
	ctx := context.Background()
	a, _ := rekey.GenerateKeypair("a")
	b, _ := rekey.GenerateKeypair("b")
	places, err := env.Client.ImportKeypair(ctx, rekey.KeypairImport{Name: "kp-new", PublicKey: a.PublicKey, Targets: env.Targets()})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(places) != "[-/-]" {
		t.Errorf("imported into %v, want the client's own project only", places)
	}
	if _, err := env.Client.ImportKeypair(ctx, rekey.KeypairImport{Name: "kp-new", PublicKey: a.PublicKey, Scope: rekey.ScopeDomain}); err != nil {
		t.Errorf("importing the same key again: %v", err)
	}
	var ie *rekey.InputError
	if _, err := env.Client.ImportKeypair(ctx, rekey.KeypairImport{Name: "kp-new", PublicKey: b.PublicKey}); !errors.As(err, &ie) || !strings.Contains(err.Error(), "kp-new") {
		t.Errorf("another key under the name: %v, want an *InputError naming it", err)
	}
	for _, tt := range []struct{ name, key, scope string }{{"kp x", a.PublicKey, ""}, {"kp-y", a.PublicKey, "world"}, {"kp-z", "not a key", ""}} {
		if _, err := env.Client.ImportKeypair(ctx, rekey.KeypairImport{Name: tt.name, PublicKey: tt.key, Scope: tt.scope}); !errors.As(err, &ie) {
			t.Errorf("ImportKeypair(%q, %.10q, %q) = %v, want an *InputError", tt.name, tt.key, tt.scope, err)
		}
	}
	if _, err := env.Client.Plan(ctx, rekey.Request{Keypair: "kp-new", Targets: env.Targets()}); err != nil {
		t.Errorf("plan to the imported keypair: %v", err)
	}
}
