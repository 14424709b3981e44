package seal

import (
	"bytes"
	"testing"
)

// FuzzOpen: a sealed value that was not made by Seal under this key for
// this identity never opens, and nothing panics; one that was, does.
func FuzzOpen(f *testing.F) {
	k, err := Load(f.TempDir(), true)
	if err != nil {
		f.Fatal(err)
	}
	good, _ := k.Seal("SecretBundle/hf/HF_TOKEN", []byte("value"))
	f.Add("SecretBundle/hf/HF_TOKEN", good)
	f.Add("SecretBundle/hf/OTHER", good)
	f.Add("", []byte{})
	f.Add("x", make([]byte, 40))
	f.Fuzz(func(t *testing.T, identity string, sealed []byte) {
		v, err := k.Open(identity, sealed)
		if err == nil && !(bytes.Equal(sealed, good) && identity == "SecretBundle/hf/HF_TOKEN") {
			t.Fatalf("a value not sealed for %q opened: %q", identity, v)
		}
		if s, err := k.Seal(identity, sealed); err != nil {
			t.Fatal(err)
		} else if back, err := k.Open(identity, s); err != nil || !bytes.Equal(back, sealed) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzOpenSealed: what `secrets seal` prints, changed in any way, never
// opens for another bundle or key, and nothing panics.
func FuzzOpenSealed(f *testing.F) {
	k, err := LoadBoxKey(f.TempDir())
	if err != nil {
		f.Fatal(err)
	}
	good, _ := SealTo(k.Public, "wandb", "WANDB_API_KEY", []byte("value"))
	f.Add("wandb", "WANDB_API_KEY", good)
	f.Add("wandb", "OTHER", good)
	f.Add("w", "K", "box:v1:")
	f.Add("w", "K", "box:v1:!!!!")
	f.Add("w", "K", "plaintext")
	f.Fuzz(func(t *testing.T, bundle, key, sealed string) {
		v, err := k.OpenSealed(bundle, key, sealed)
		if err == nil && !(sealed == good && bundle == "wandb" && key == "WANDB_API_KEY") {
			t.Fatalf("a changed or moved sealed value opened for %s/%s: %q", bundle, key, v)
		}
	})
}
