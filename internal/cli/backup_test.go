package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

// restoreInto puts a backup and the home's keys (as read now) into a new
// home, opens it and returns the store.
func (e *env) restoreInto(t *testing.T, backup string) *state.Bolt {
	t.Helper()
	home := t.TempDir()
	b, err := os.ReadFile(backup)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(home, state.DBFile), b, 0o600)
	for _, f := range []string{seal.KeyFile, seal.BoxKeyFile} {
		k, _ := os.ReadFile(filepath.Join(e.home, f))
		os.WriteFile(filepath.Join(home, f), k, 0o600)
	}
	s, err := state.OpenBolt(home, state.BoltOptions{})
	if err != nil {
		t.Fatalf("the restored backup does not open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestBackupWritesACheckedCopyThatRestores(t *testing.T) {
	e := newEnv(t)
	e.must("secrets", "new", "hf", "HF_TOKEN=hf-value")
	e.must("submit", "img:1", "--name", "train", "--secret", "hf")
	file := filepath.Join(t.TempDir(), "backup.db")
	r := e.must("backup", file)
	if !strings.Contains(r.stdout, "backed up the store to "+file) || !strings.Contains(r.stderr, "cipher.key") {
		t.Errorf("output:\n%s", r)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v %v", fi, err)
	}
	s := e.restoreInto(t, file)
	ctx := context.Background()
	if _, err := s.Get(ctx, manifests.KindDeployment, "train"); err != nil {
		t.Errorf("deployment not in the backup: %v", err)
	}
	if v, _, err := s.OpenSecrets(ctx, manifests.KindSecretBundle, "hf"); err != nil || v["HF_TOKEN"] != "hf-value" {
		t.Errorf("bundle in the backup: %v %v", v, err)
	}
	if s.ClusterID() != e.cluster {
		t.Error("the backup has another cluster id")
	}
	// No partial file is left beside it.
	entries, _ := os.ReadDir(filepath.Dir(file))
	if len(entries) != 1 {
		t.Errorf("files beside the backup: %v", entries)
	}
}

func TestBackupIntoAMissingDirectoryFailsAndLeavesNothing(t *testing.T) {
	e := newEnv(t)
	r := e.run("backup", filepath.Join(t.TempDir(), "no", "such", "dir", "b.db"))
	if r.err == nil || r.code != 1 {
		t.Fatalf("want a failure:\n%s", r)
	}
}

func TestKeysRotateReSealsAndTheStoreKeepsServing(t *testing.T) {
	e := newEnv(t)
	e.must("secrets", "new", "hf", "HF_TOKEN=hf-value")
	oldKey, _ := os.ReadFile(filepath.Join(e.home, seal.KeyFile))
	r := e.must("keys", "rotate")
	if !strings.Contains(r.stdout, "1 sealed value(s) re-sealed") || !strings.Contains(r.stderr, "make a new one") {
		t.Errorf("output:\n%s", r)
	}
	newKey, _ := os.ReadFile(filepath.Join(e.home, seal.KeyFile))
	if string(oldKey) == string(newKey) {
		t.Fatal("cipher.key did not change")
	}
	// Writes after the rotation are sealed under the new key; the backup
	// opens with it, and holds both values.
	e.must("secrets", "new", "wandb", "WANDB_API_KEY=w-value")
	file := filepath.Join(t.TempDir(), "b.db")
	e.must("backup", file)
	s := e.restoreInto(t, file)
	for name, want := range map[string]string{"hf": "hf-value", "wandb": "w-value"} {
		v, _, err := s.OpenSecrets(context.Background(), manifests.KindSecretBundle, name)
		if err != nil || len(v) != 1 {
			t.Fatalf("%s after rotation: %v", name, err)
		}
		for _, got := range v {
			if got != want {
				t.Errorf("%s = %q", name, got)
			}
		}
	}
	if r := e.run("keys"); r.code != 2 {
		t.Errorf("keys without a verb: exit %d", r.code)
	}
}
