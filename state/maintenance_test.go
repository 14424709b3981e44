package state_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

// seedStore makes a store in home with a bundle and a deployment, and
// closes it.
func seedStore(t *testing.T, home string) {
	t.Helper()
	s, err := state.OpenBolt(home, state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Apply(ctx, []state.Write{
		{Object: bundle("hf"), Secrets: map[string]string{"HF_TOKEN": "hf-secret"}},
		{Object: deployment("train", manifests.LocalCredentials, "hf")},
	}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		return "absent"
	}
	return fmt.Sprintf("%d:%x", len(b), sha256.Sum256(b))
}

// usedBytes is how much of a bbolt file its pages use.
func usedBytes(t *testing.T, path string) int64 {
	t.Helper()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int64
	db.View(func(tx *bolt.Tx) error { n = tx.Size(); return nil })
	return n
}

// TestStartRefusesADamagedOrMissingStoreAndLeavesItAlone: each is a home
// that held a store; the open must fail with ErrDamaged, a message that
// says how to restore, and every file in the home as it was.
func TestStartRefusesADamagedOrMissingStoreAndLeavesItAlone(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(t *testing.T, db string)
		want   string
	}{
		{"an empty state.db", func(t *testing.T, db string) { os.Truncate(db, 0) }, "is empty (0 bytes)"},
		{"a missing state.db", func(t *testing.T, db string) { os.Remove(db) }, "is missing"},
		{"a truncated state.db", func(t *testing.T, db string) {
			// Half of the pages in use: bbolt grows the file ahead of its
			// data, so cutting the file in half may cut only unused space.
			os.Truncate(db, usedBytes(t, db)/2)
		}, "truncated"},
		{"a state.db cut to one page", func(t *testing.T, db string) { os.Truncate(db, 4096) }, "damaged"},
		{"a state.db whose meta pages are overwritten", func(t *testing.T, db string) {
			f, _ := os.OpenFile(db, os.O_WRONLY, 0)
			f.WriteAt(bytes.Repeat([]byte{0xAB}, 8192), 0)
			f.Close()
		}, "damaged"},
		{"a state.db whose data pages are garbage", func(t *testing.T, db string) {
			f, _ := os.OpenFile(db, os.O_WRONLY, 0)
			f.WriteAt(bytes.Repeat([]byte{0x5A}, int(usedBytes(t, db))-8192), 8192)
			f.Close()
		}, "damaged"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			seedStore(t, home)
			db := filepath.Join(home, state.DBFile)
			tc.damage(t, db)
			before := map[string]string{}
			for _, f := range []string{state.DBFile, seal.KeyFile, seal.BoxKeyFile} {
				before[f] = fileSum(t, filepath.Join(home, f))
			}
			s, err := state.OpenBolt(home, state.BoltOptions{})
			if err == nil {
				s.Close()
				t.Fatal("the damaged store opened")
			}
			t.Log(err)
			if !errors.Is(err, state.ErrDamaged) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "anycloud backup") {
				t.Errorf("error %q, want ErrDamaged saying %q and how to restore", err, tc.want)
			}
			for f, sum := range before {
				if got := fileSum(t, filepath.Join(home, f)); got != sum {
					t.Errorf("%s changed: %s, was %s", f, got, sum)
				}
			}
		})
	}
}

func TestAFirstStartMakesAStore(t *testing.T) {
	home := t.TempDir()
	// An empty file and no keys: a first start that died before bbolt
	// wrote anything.
	os.WriteFile(filepath.Join(home, state.DBFile), nil, 0o600)
	s := openBoltAt(t, home, state.BoltOptions{})
	if s.ClusterID() == "" {
		t.Error("no cluster id")
	}
}

func TestALostSealingKeyIsRefusedNotReplaced(t *testing.T) {
	home := t.TempDir()
	seedStore(t, home)
	boxPath := filepath.Join(home, seal.BoxKeyFile)
	orig, err := os.ReadFile(boxPath)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(boxPath)
	_, err = state.OpenBolt(home, state.BoltOptions{})
	if !errors.Is(err, seal.ErrBoxKeyMissing) {
		t.Fatalf("open without seal.key: %v, want ErrBoxKeyMissing", err)
	}
	if _, serr := os.Stat(boxPath); !errors.Is(serr, os.ErrNotExist) {
		t.Error("a new seal.key was made")
	}
	// Another key in its place is refused too.
	if _, err := seal.LoadBoxKey(home); err != nil {
		t.Fatal(err)
	}
	if _, err := state.OpenBolt(home, state.BoltOptions{}); err == nil || !strings.Contains(err.Error(), "not the one this control plane made") {
		t.Fatalf("open with another seal.key: %v", err)
	}
	os.WriteFile(boxPath, orig, 0o600)
	s := openBoltAt(t, home, state.BoltOptions{})
	if s.SealingKey() == nil {
		t.Fatal("no sealing key")
	}
}

func TestALostCipherKeyIsRefused(t *testing.T) {
	home := t.TempDir()
	seedStore(t, home)
	os.Remove(filepath.Join(home, seal.KeyFile))
	sum := fileSum(t, filepath.Join(home, state.DBFile))
	if _, err := state.OpenBolt(home, state.BoltOptions{}); !errors.Is(err, seal.ErrKeyMissing) {
		t.Fatalf("open: %v, want ErrKeyMissing", err)
	}
	if fileSum(t, filepath.Join(home, state.DBFile)) != sum {
		t.Error("state.db changed")
	}
}

// TestBackupIsAConsistentCopyWhileWritersRun backs up while writers
// apply: the copy opens (with the home's keys), passes the check, and
// holds every object that was committed before the backup began.
func TestBackupIsAConsistentCopyWhileWritersRun(t *testing.T) {
	ctx := context.Background()
	s, home := openBolt(t)
	for i := range 50 {
		if _, err := s.Apply(ctx, []state.Write{{Object: bundle(fmt.Sprintf("pre-%d", i)), Secrets: map[string]string{"K": fmt.Sprintf("v%d", i)}}}, state.ApplyOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				s.Apply(ctx, []state.Write{{Object: deployment(fmt.Sprintf("w%d-%d", w, i), manifests.LocalCredentials)}}, state.ApplyOptions{})
			}
		}()
	}
	var buf bytes.Buffer
	n, err := s.Backup(ctx, &buf)
	close(stop)
	wg.Wait()
	if err != nil || n != int64(buf.Len()) {
		t.Fatalf("backup: %d bytes, %v (buffer %d)", n, err, buf.Len())
	}
	restored := t.TempDir()
	os.WriteFile(filepath.Join(restored, state.DBFile), buf.Bytes(), 0o600)
	if objs, err := state.CheckBackup(filepath.Join(restored, state.DBFile)); err != nil || objs < 51 {
		t.Fatalf("CheckBackup: %d objects, %v", objs, err)
	}
	for _, f := range []string{seal.KeyFile, seal.BoxKeyFile} {
		b, _ := os.ReadFile(filepath.Join(home, f))
		os.WriteFile(filepath.Join(restored, f), b, 0o600)
	}
	r := openBoltAt(t, restored, state.BoltOptions{})
	if r.ClusterID() != s.ClusterID() {
		t.Error("the restored store has another cluster id")
	}
	for i := range 50 {
		v, _, err := r.OpenSecrets(ctx, manifests.KindSecretBundle, fmt.Sprintf("pre-%d", i))
		if err != nil || v["K"] != fmt.Sprintf("v%d", i) {
			t.Fatalf("bundle pre-%d in the backup: %v %v", i, v, err)
		}
	}
}

func TestCheckBackupRefusesWhatIsNotAStore(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.db")
	os.WriteFile(p, []byte("not a database at all, just text"), 0o600)
	if _, err := state.CheckBackup(p); !errors.Is(err, state.ErrDamaged) {
		t.Errorf("text file: %v", err)
	}
}

func TestRotateKeyReSealsEverythingUnderANewKey(t *testing.T) {
	ctx := context.Background()
	s, home := openBolt(t)
	writes := []state.Write{credentialsWrite("aws1", "aws-secret")}
	for i := range 20 {
		writes = append(writes, state.Write{Object: bundle(fmt.Sprintf("b%d", i)), Secrets: map[string]string{"A": fmt.Sprintf("a%d", i), "B": "b"}})
	}
	if _, err := s.Apply(ctx, writes, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	oldKey, _ := os.ReadFile(filepath.Join(home, seal.KeyFile))
	res, err := s.RotateKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Records != 41 {
		t.Errorf("re-sealed %d records, want 41", res.Records)
	}
	newKey, _ := os.ReadFile(filepath.Join(home, seal.KeyFile))
	if bytes.Equal(oldKey, newKey) || len(newKey) != 32 {
		t.Fatal("cipher.key did not change")
	}
	if _, err := os.Stat(filepath.Join(home, seal.NewKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Error("cipher.key.new left behind")
	}
	check := func(s *state.Bolt) {
		t.Helper()
		for i := range 20 {
			v, _, err := s.OpenSecrets(ctx, manifests.KindSecretBundle, fmt.Sprintf("b%d", i))
			if err != nil || v["A"] != fmt.Sprintf("a%d", i) {
				t.Fatalf("b%d after rotation: %v %v", i, v, err)
			}
		}
		if v, _, err := s.OpenSecrets(ctx, manifests.KindCredentials, "aws1"); err != nil || v["secretAccessKey"] != "aws-secret" {
			t.Fatalf("credentials after rotation: %v", err)
		}
	}
	check(s)
	// Writes go on under the new key.
	if _, err := s.Apply(ctx, []state.Write{{Object: bundle("after"), Secrets: map[string]string{"X": "y"}}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s2 := openBoltAt(t, home, state.BoltOptions{})
	check(s2)
	// The old key no longer opens the store.
	os.WriteFile(filepath.Join(home, seal.KeyFile), oldKey, 0o600)
	s2.Close()
	if _, err := state.OpenBolt(home, state.BoltOptions{}); err == nil {
		t.Error("the old key still opens the store")
	}
}

func TestRotateKeyWhileReadersOpenSecrets(t *testing.T) {
	ctx := context.Background()
	s, _ := openBolt(t)
	if _, err := s.Apply(ctx, []state.Write{{Object: bundle("b"), Secrets: map[string]string{"K": "v"}}}, state.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	errs := make(chan error, 1)
	go func() {
		defer close(errs)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if v, _, err := s.OpenSecrets(ctx, manifests.KindSecretBundle, "b"); err != nil || v["K"] != "v" {
				errs <- fmt.Errorf("read during rotation: %v %v", v, err)
				return
			}
		}
	}()
	for range 5 {
		if _, err := s.RotateKey(ctx); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
}
