package controller

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/state"
)

func TestScrubberRemovesEveryFormOfAValue(t *testing.T) {
	env := map[string]string{
		"TOKEN":  "sk-live-\"quoted\"\tvalue",
		"MULTI":  "first-line-of-it\nsecond-line-of-it",
		"SHORT":  "on",
		"EPOCHS": "3", // plain env: shown by status, left alone
	}
	s := newScrubber(env, map[string]string{"EPOCHS": "3"})
	for _, msg := range []string{
		"invalid env: sk-live-\"quoted\"\tvalue",
		fmt.Sprintf("invalid env %q", "TOKEN=sk-live-\"quoted\"\tvalue"),
		`{"error":"sk-live-\"quoted\"\tvalue"}`,
		"line: second-line-of-it",
		"bad entry SHORT=on",
	} {
		got := s.String(msg)
		for _, frag := range []string{"sk-live", "second-line-of-it", "SHORT=on"} {
			if strings.Contains(got, frag) {
				t.Errorf("scrub(%q) = %q: still holds %q", msg, got, frag)
			}
		}
		if !strings.Contains(got, "<redacted ") {
			t.Errorf("scrub(%q) = %q: says nothing was removed", msg, got)
		}
	}
	if got := s.String("attempt 3 is on its way"); got != "attempt 3 is on its way" {
		t.Errorf("plain and short values mangled a message: %q", got)
	}
}

func TestScrubbedErrorKeepsItsSentinelButNotItsText(t *testing.T) {
	s := newScrubber(map[string]string{"K": "hunter2-secret"}, nil)
	orig := fmt.Errorf("create container: env K=hunter2-secret: %w", provider.ErrInvalid)
	err := s.Error(orig)
	if !errors.Is(err, provider.ErrInvalid) {
		t.Error("the scrubbed error lost its sentinel")
	}
	if strings.Contains(err.Error(), "hunter2") || errors.Unwrap(err) != nil {
		t.Errorf("scrubbed error %q (unwraps to %v)", err, errors.Unwrap(err))
	}
	clean := errors.New("no value here")
	if s.Error(clean) != clean || s.Error(nil) != nil {
		t.Error("an error without a value should come back as it was")
	}
}

// quotingProvider fails every launch and bootstrap the way container
// runtimes do: with an error that quotes the environment it was given.
type quotingProvider struct {
	bootstrap bool
	mu        sync.Mutex
	vms       []provider.VM
}

func (p *quotingProvider) Key() string { return "quoting" }

func (p *quotingProvider) Launch(ctx context.Context, req provider.LaunchRequest) (provider.VM, error) {
	if p.bootstrap {
		vm := provider.VM{ID: "vm-1", UID: req.UID, Deployment: req.Deployment, Attempt: req.Attempt, State: provider.StateRunning}
		p.mu.Lock()
		p.vms = []provider.VM{vm}
		p.mu.Unlock()
		return vm, nil
	}
	return provider.VM{}, fmt.Errorf("create container: invalid environment %q (raw: %s): %w", envList(req.Env), envList(req.Env), provider.ErrInvalid)
}

func (p *quotingProvider) Bootstrap(ctx context.Context, vm provider.VM, req provider.LaunchRequest) error {
	return fmt.Errorf("ssh: remote command failed: docker: invalid env file line %q", envList(req.Env))
}

func (p *quotingProvider) List(ctx context.Context) ([]provider.VM, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]provider.VM(nil), p.vms...), nil
}

func (p *quotingProvider) Terminate(ctx context.Context, id string) error { return nil }

func envList(env map[string]string) string {
	var parts []string
	for k, v := range env {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, " ")
}

type onlyProvider struct{ p provider.Provider }

func (o onlyProvider) For(context.Context, *manifests.Credentials, map[string]string, string) (provider.Provider, error) {
	return o.p, nil
}

type bootstrappingProvider struct{ *quotingProvider }

// TestProviderErrorsAreScrubbedBeforeTheyAreStoredOrLogged: a provider
// error that quotes the launch's env reaches conditions, events, the log
// and the returned error without the secret value, for a launch and for
// a bootstrap.
func TestProviderErrorsAreScrubbedBeforeTheyAreStoredOrLogged(t *testing.T) {
	const canary = "CANARY-scrub-9f8e7d6c"
	for _, tc := range []struct {
		name string
		prov provider.Provider
	}{
		{"launch", &quotingProvider{}},
		{"bootstrap", bootstrappingProvider{&quotingProvider{bootstrap: true}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			home := t.TempDir()
			store, err := state.OpenBolt(home, state.BoltOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer store.Close()
			b := &manifests.SecretBundle{TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindSecretBundle}, Metadata: manifests.ObjectMeta{Name: "s"}}
			d := &manifests.Deployment{
				TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
				Metadata: manifests.ObjectMeta{Name: "d"},
				Spec:     manifests.DeploymentSpec{Image: "x", Credentials: manifests.LocalCredentials, Secrets: []string{"s"}, Env: map[string]string{"MODE": "fast"}},
			}
			if _, err := store.Apply(ctx, []state.Write{{Object: b, Secrets: map[string]string{"TOKEN": canary}}, {Object: d}}, state.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			var logs bytes.Buffer
			var mu sync.Mutex
			log := funcr.New(func(prefix, args string) { mu.Lock(); fmt.Fprintln(&logs, prefix, args); mu.Unlock() }, funcr.Options{Verbosity: 1})
			c := New(Options{Store: store, Providers: onlyProvider{tc.prov}, Log: log, Resync: time.Hour})
			var errs []string
			for range 4 {
				_, err := c.safeReconcile(ctx, "d")
				if err != nil {
					errs = append(errs, err.Error())
				}
			}
			// A failed launch is an error for the queue; a failed bootstrap
			// is a VM still booting, retried after the boot back-off.
			if len(errs) == 0 && tc.name == "launch" {
				t.Fatal("no reconcile failed; the provider should have refused")
			}
			obj, _ := store.Get(ctx, manifests.KindDeployment, "d")
			evs, _ := store.Events(ctx, manifests.Ref(obj))
			var where []string
			where = append(where, "errors: "+strings.Join(errs, "\n"), "log: "+logs.String(), fmt.Sprintf("status: %s", obj.StatusJSON()), fmt.Sprintf("events: %+v", evs))
			sawRedacted := false
			for _, w := range where {
				if strings.Contains(w, canary) {
					t.Errorf("the value leaked into %s", w)
				}
				sawRedacted = sawRedacted || strings.Contains(w, "<redacted TOKEN>")
			}
			if !sawRedacted {
				t.Errorf("no message says what was redacted:\n%s", strings.Join(where, "\n"))
			}
			if !strings.Contains(strings.Join(where, "\n"), "MODE=fast") {
				t.Errorf("the plain env was scrubbed too:\n%s", strings.Join(where, "\n"))
			}
			db, _ := os.ReadFile(filepath.Join(home, state.DBFile))
			if bytes.Contains(db, []byte(canary)) {
				t.Error("the value is in state.db unsealed")
			}
		})
	}
}
