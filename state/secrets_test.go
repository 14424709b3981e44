package state_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

const (
	canary      = "canary-9f8e7d6c5b4a"
	canaryOld   = "canary-0a1b2c3d4e5f"
	canaryCreds = "canary-creds-5e6f7a8b9c"
)

// encodings returns byte strings that appear in any base64 or hex
// encoding of a text containing value, whatever its alignment.
func encodings(value string) [][]byte {
	out := [][]byte{[]byte(value), []byte(hex.EncodeToString([]byte(value)))}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for pad := range 3 {
			e := enc.EncodeToString(append(make([]byte, pad), value...))
			start := []int{0, 2, 3}[pad] // first character made only of value's bits
			out = append(out, []byte(e[start:len(e)-4]))
		}
	}
	return out
}

func assertNoSecret(t *testing.T, what string, data []byte, values ...string) {
	t.Helper()
	for _, v := range values {
		for _, needle := range encodings(v) {
			if bytes.Contains(data, needle) {
				t.Errorf("%s contains secret %q (as %q)", what, v, needle)
			}
		}
	}
}

func TestSecretValuesAreNeverStoredOrReturnedInTheClear(t *testing.T) {
	home := t.TempDir()
	s := openBoltAt(t, home, state.BoltOptions{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var watches []<-chan state.WatchEvent
	for _, k := range manifests.Kinds {
		_, ch, err := s.Watch(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		watches = append(watches, ch)
	}

	// The plaintext and box-sealed spec fields are consumed by the client
	// at apply time; the store must drop them even if they reach it.
	hf := bundle("hf")
	hf.Spec.StringData = map[string]string{"HF_TOKEN": canaryOld}
	hf.Spec.Sealed = map[string]string{"WANDB_API_KEY": canaryOld}
	creds := awsCredentials("my-aws")
	apply(t, s,
		state.Write{Object: hf, Secrets: map[string]string{"HF_TOKEN": canaryOld, "WANDB_API_KEY": "w"}},
		state.Write{Object: creds, Secrets: map[string]string{"secretAccessKey": canaryCreds}},
		state.Write{Object: deployment("train", "my-aws", "hf")},
	)
	// Overwrite: the old value must not linger either.
	apply(t, s, bundleWrite("hf", map[string]string{"HF_TOKEN": canary, "WANDB_API_KEY": "w"}))

	values, gen, err := s.OpenSecrets(ctx, manifests.KindSecretBundle, "hf")
	if err != nil {
		t.Fatal(err)
	}
	if df := diff(map[string]string{"HF_TOKEN": canary, "WANDB_API_KEY": "w"}, values); df != "" || gen != 2 {
		t.Errorf("OpenSecrets(hf) generation %d (want 2):%s", gen, df)
	}
	values, _, err = s.OpenSecrets(ctx, manifests.KindCredentials, "my-aws")
	if err != nil {
		t.Fatal(err)
	}
	if df := diff(map[string]string{"secretAccessKey": canaryCreds}, values); df != "" {
		t.Errorf("OpenSecrets(my-aws):%s", df)
	}

	secrets := []string{canary, canaryOld, canaryCreds}
	b := getBundle(t, s, "hf")
	if df := diff([]string{"HF_TOKEN", "WANDB_API_KEY"}, b.Status.Keys); df != "" {
		t.Errorf("bundle status.keys:%s", df)
	}
	if b.Spec.StringData != nil || b.Spec.Sealed != nil {
		t.Errorf("bundle spec kept stringData %v / sealed %v", b.Spec.StringData, b.Spec.Sealed)
	}
	c := get(t, s, manifests.KindCredentials, "my-aws").(*manifests.Credentials)
	if df := diff([]string{"secretAccessKey"}, c.Status.SecretKeys); df != "" {
		t.Errorf("credentials status.secretKeys:%s", df)
	}
	for _, k := range manifests.Kinds {
		objs, _, err := s.List(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range objs {
			data, _ := json.Marshal(o)
			assertNoSecret(t, "List("+string(k)+") object "+o.GetMeta().Name, data, secrets...)
			data, _ = json.Marshal(get(t, s, k, o.GetMeta().Name))
			assertNoSecret(t, "Get("+string(k)+") object "+o.GetMeta().Name, data, secrets...)
		}
	}
	var n int
	for _, ch := range watches {
		for more := true; more; {
			select {
			case ev := <-ch:
				n++
				data, _ := json.Marshal(ev)
				assertNoSecret(t, "watch event", data, secrets...)
			default:
				more = false
			}
		}
	}
	if n < 4 {
		t.Errorf("saw %d watch events, want at least 4", n)
	}
	_, err = s.Delete(ctx, manifests.KindSecretBundle, "hf", state.DeleteOptions{})
	if err == nil {
		t.Fatal("delete of a bundle in use succeeded")
	}
	assertNoSecret(t, "in-use error", []byte(err.Error()), secrets...)

	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(home, state.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	assertNoSecret(t, state.DBFile, raw, secrets...)
	// The check itself works: the key names are in the file.
	if !bytes.Contains(raw, []byte("WANDB_API_KEY")) {
		t.Errorf("%s does not contain the key name WANDB_API_KEY; is this the right file?", state.DBFile)
	}
}

func TestReopeningWithTheSameKeyKeepsSecrets(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	s := openBoltAt(t, home, state.BoltOptions{})
	apply(t, s, bundleWrite("hf", map[string]string{"HF_TOKEN": canary}))
	uid := getBundle(t, s, "hf").Metadata.UID
	s.Close()

	for _, f := range []struct {
		path string
		mode os.FileMode
	}{{home, 0o700}, {filepath.Join(home, seal.KeyFile), 0o600}, {filepath.Join(home, state.DBFile), 0o600}} {
		fi, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != f.mode {
			t.Errorf("%s mode = %v, want %v", f.path, fi.Mode().Perm(), f.mode)
		}
	}

	s2 := openBoltAt(t, home, state.BoltOptions{})
	values, _, err := s2.OpenSecrets(context.Background(), manifests.KindSecretBundle, "hf")
	if err != nil {
		t.Fatal(err)
	}
	if values["HF_TOKEN"] != canary {
		t.Errorf("after reopening HF_TOKEN = %q, want the value stored", values["HF_TOKEN"])
	}
	if got := getBundle(t, s2, "hf").Metadata.UID; got != uid {
		t.Errorf("uid %s → %s after reopening", uid, got)
	}
}

// readFiles returns the contents of the key file and the store, "" for a
// file that does not exist.
func readFiles(t *testing.T, home string) (key, db []byte, keyExists bool) {
	t.Helper()
	key, err := os.ReadFile(filepath.Join(home, seal.KeyFile))
	keyExists = err == nil
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	db, err = os.ReadFile(filepath.Join(home, state.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	return key, db, keyExists
}

// storeWithSecrets makes a store in a new home holding a bundle, and closes
// it.
func storeWithSecrets(t *testing.T) string {
	t.Helper()
	home := t.TempDir()
	s := openBoltAt(t, home, state.BoltOptions{})
	apply(t, s, bundleWrite("hf", map[string]string{"HF_TOKEN": canary}))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return home
}

func TestOpenWithAnotherKeyFailsAndChangesNothing(t *testing.T) {
	home := storeWithSecrets(t)
	keyPath := filepath.Join(home, seal.KeyFile)
	other := bytes.Repeat([]byte{0x42}, 32)
	if err := os.WriteFile(keyPath, other, 0o600); err != nil {
		t.Fatal(err)
	}
	keyBefore, dbBefore, _ := readFiles(t, home)

	s, err := state.OpenBolt(home, state.BoltOptions{})
	if err == nil {
		s.Close()
		t.Fatal("OpenBolt with another key succeeded")
	}
	if msg := err.Error(); !strings.Contains(msg, "key") || !strings.Contains(msg, keyPath) {
		t.Errorf("error %q does not name the cipher key %s", msg, keyPath)
	}
	keyAfter, dbAfter, _ := readFiles(t, home)
	if !bytes.Equal(keyAfter, keyBefore) {
		t.Errorf("key file changed by a refused open")
	}
	if !bytes.Equal(dbAfter, dbBefore) {
		t.Errorf("%s changed by a refused open", state.DBFile)
	}
	// The file is not left locked: a later open with the right key would
	// work; here it fails again the same way rather than timing out.
	if _, err := state.OpenBolt(home, state.BoltOptions{}); err == nil || strings.Contains(err.Error(), "locked") {
		t.Errorf("second open: error = %v, want the key error again", err)
	}
}

func TestOpenWithoutKeyOverSealedDataFailsAndMakesNoKey(t *testing.T) {
	home := storeWithSecrets(t)
	keyPath := filepath.Join(home, seal.KeyFile)
	if err := os.Remove(keyPath); err != nil {
		t.Fatal(err)
	}
	_, dbBefore, _ := readFiles(t, home)

	s, err := state.OpenBolt(home, state.BoltOptions{})
	if err == nil {
		s.Close()
		t.Fatal("OpenBolt without the key succeeded")
	}
	if !errors.Is(err, seal.ErrKeyMissing) {
		t.Errorf("error = %v, want seal.ErrKeyMissing", err)
	}
	if _, err := os.Stat(keyPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a key file exists after the refused open: %v", err)
	}
	_, dbAfter, _ := readFiles(t, home)
	if !bytes.Equal(dbAfter, dbBefore) {
		t.Errorf("%s changed by a refused open", state.DBFile)
	}
}

// editSealed changes the raw sealed record of a bundle in a closed store.
func editSealed(t *testing.T, home, bundle string, edit func(b *bolt.Bucket, rec map[string][]byte)) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(home, state.DBFile), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket([]byte("sealed"))
		if b == nil {
			return errors.New("no bucket sealed")
		}
		var rec map[string][]byte
		if err := json.Unmarshal(b.Get([]byte("SecretBundle/"+bundle)), &rec); err != nil {
			return err
		}
		edit(b, rec)
		data, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		return b.Put([]byte("SecretBundle/"+bundle), data)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestSealedValueMovedToAnotherRecordDoesNotOpen(t *testing.T) {
	tests := []struct {
		name string
		edit func(t *testing.T, home string)
	}{
		{"another bundle's record", func(t *testing.T, home string) {
			editSealed(t, home, "victim", func(b *bolt.Bucket, rec map[string][]byte) {
				var src map[string][]byte
				if err := json.Unmarshal(b.Get([]byte("SecretBundle/source")), &src); err != nil {
					t.Fatal(err)
				}
				rec["TOKEN"] = src["TOKEN"]
			})
		}},
		{"another key of the same bundle", func(t *testing.T, home string) {
			editSealed(t, home, "victim", func(_ *bolt.Bucket, rec map[string][]byte) {
				rec["OTHER"] = rec["TOKEN"]
			})
		}},
		{"tampered ciphertext", func(t *testing.T, home string) {
			editSealed(t, home, "victim", func(_ *bolt.Bucket, rec map[string][]byte) {
				rec["TOKEN"][len(rec["TOKEN"])-1] ^= 1
			})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			s := openBoltAt(t, home, state.BoltOptions{})
			apply(t, s,
				bundleWrite("source", map[string]string{"TOKEN": canary}),
				bundleWrite("victim", map[string]string{"TOKEN": "victim-value", "OTHER": "other-value"}),
			)
			s.Close()
			tc.edit(t, home)

			s2 := openBoltAt(t, home, state.BoltOptions{})
			ctx := context.Background()
			values, _, err := s2.OpenSecrets(ctx, manifests.KindSecretBundle, "victim")
			if err == nil {
				t.Fatalf("OpenSecrets(victim) = %v, want an error", values)
			}
			if !errors.Is(err, seal.ErrIdentity) && !errors.Is(err, seal.ErrOpen) {
				t.Errorf("error = %v, want seal.ErrIdentity or seal.ErrOpen", err)
			}
			assertNoSecret(t, "error", []byte(err.Error()), canary, "victim-value")
			if v, _, err := s2.OpenSecrets(ctx, manifests.KindSecretBundle, "source"); err != nil || v["TOKEN"] != canary {
				t.Errorf("OpenSecrets(source) = %v, %v; want it untouched", v, err)
			}
		})
	}
}

func TestSecondOpenOfAnOpenStoreFailsLocked(t *testing.T) {
	s, home := openBolt(t)
	start := time.Now()
	s2, err := state.OpenBolt(home, state.BoltOptions{})
	if err == nil {
		s2.Close()
		t.Fatal("second OpenBolt of an open store succeeded")
	}
	if !strings.Contains(err.Error(), "locked") {
		t.Errorf("error = %q, want it to say the store is locked", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("second open took %v to fail", d)
	}
	// The first store is unaffected.
	applyObject(t, s, deployment("train", manifests.LocalCredentials))
	s.Close()
	// Once closed, the home opens again.
	s3 := openBoltAt(t, home, state.BoltOptions{})
	if !exists(t, s3, manifests.KindDeployment, "train") {
		t.Errorf("deployment lost across reopen")
	}
}
