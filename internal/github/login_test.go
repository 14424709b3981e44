package github

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/anycloud/anycloud/seal"
)

func newKeys(t *testing.T, home string) *seal.Keyring {
	t.Helper()
	k, err := seal.Load(home, true)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestLoginIsSealedAtRestAndOpensOnlyUnderItsKey(t *testing.T) {
	home := t.TempDir()
	keys := newKeys(t, home)
	in := &Login{
		Token: canary, User: "octocat", WebURL: DefaultWebURL, APIURL: DefaultAPIURL,
		Registries: []string{"ghcr.io"}, Scopes: []string{"repo"}, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	}
	if err := Save(home, keys, in); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(home, TokenFile)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	for _, form := range []string{canary, base64.StdEncoding.EncodeToString([]byte(canary)), hex.EncodeToString([]byte(canary)), "octocat"} {
		if bytes.Contains(data, []byte(form)) {
			t.Errorf("the file holds %q in the clear:\n%s", form, data)
		}
	}
	if entries, _ := os.ReadDir(home); len(entries) != 2 { // cipher.key, .token
		t.Errorf("home holds %v, want cipher.key and .token only", entries)
	}

	out, err := Load(home, keys)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(in, out); diff != "" {
		t.Errorf("loaded (-want +got):\n%s", diff)
	}

	// Another key does not open it, and says to log in again.
	other := newKeys(t, t.TempDir())
	if _, err := Load(home, other); !errors.Is(err, seal.ErrOpen) || !strings.Contains(err.Error(), "anycloud login") {
		t.Errorf("load under another key: %v", err)
	}

	// A sealed value of another record does not open as a login.
	foreign, err := keys.Seal("SecretBundle/hf/HF_TOKEN", []byte(`{"token":"x"}`))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(path, []byte(fileHeader+base64.StdEncoding.EncodeToString(foreign)+"\n"), 0o600)
	if _, err := Load(home, keys); !errors.Is(err, seal.ErrIdentity) {
		t.Errorf("load of another record's value: %v", err)
	}

	// Plaintext is refused.
	os.WriteFile(path, []byte(canary+"\n"), 0o600)
	if _, err := Load(home, keys); err == nil || strings.Contains(err.Error(), canary) {
		t.Errorf("load of a plaintext file: %v", err)
	}

	// A file others can read is refused.
	if err := Save(home, keys, in); err != nil {
		t.Fatal(err)
	}
	os.Chmod(path, 0o644)
	if _, err := Load(home, keys); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("load of a 0644 file: %v", err)
	}
}

func TestRemoveDeletesTheLoginAndToleratesNone(t *testing.T) {
	home := t.TempDir()
	keys := newKeys(t, home)
	if _, err := Load(home, keys); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("load with no login: %v", err)
	}
	if err := Save(home, keys, &Login{Token: canary}); err != nil {
		t.Fatal(err)
	}
	if had, err := Remove(home); !had || err != nil {
		t.Errorf("remove: %v, %v", had, err)
	}
	if had, err := Remove(home); had || err != nil {
		t.Errorf("second remove: %v, %v", had, err)
	}
	if _, err := Load(home, keys); !errors.Is(err, ErrNotLoggedIn) {
		t.Errorf("load after remove: %v", err)
	}
}

func TestRegistryHost(t *testing.T) {
	for in, want := range map[string]string{
		"ghcr.io/me/train:latest":        "ghcr.io",
		"GHCR.io/me/train":               "ghcr.io",
		"127.0.0.1:5000/me/private:v1":   "127.0.0.1:5000",
		"localhost/x":                    "localhost",
		"ubuntu":                         "docker.io",
		"library/ubuntu:24.04":           "docker.io",
		"me/train@sha256:abc":            "docker.io",
		"containers.ghe.example.com/a/b": "containers.ghe.example.com",
		"anycloud-demo:test":             "docker.io",
	} {
		if got := RegistryHost(in); got != want {
			t.Errorf("RegistryHost(%q) = %q, want %q", in, got, want)
		}
	}
	l := &Login{Registries: []string{"ghcr.io", "127.0.0.1:5000"}}
	if !l.ForRegistry("GHCR.IO") || l.ForRegistry("docker.io") || !l.ForRegistry("127.0.0.1:5000") {
		t.Error("ForRegistry")
	}
}
