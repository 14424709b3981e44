package seal

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// loadBoxKey makes a fresh control-plane sealing key in its own home.
func loadBoxKey(t *testing.T) *BoxKey {
	t.Helper()
	k, err := LoadBoxKey(filepath.Join(t.TempDir(), "home"))
	if err != nil {
		t.Fatalf("LoadBoxKey: %v", err)
	}
	return k
}

func mustSealTo(t *testing.T, pub [32]byte, bundle, key, value string) string {
	t.Helper()
	s, err := SealTo(pub, bundle, key, []byte(value))
	if err != nil {
		t.Fatalf("SealTo(%s/%s): %v", bundle, key, err)
	}
	return s
}

// payload is the base64-decoded part of a box-sealed value.
func payload(t *testing.T, sealed string) []byte {
	t.Helper()
	rest, ok := strings.CutPrefix(sealed, boxPrefix)
	if !ok {
		t.Fatalf("sealed value %q lacks prefix %q", sealed, boxPrefix)
	}
	raw, err := base64.StdEncoding.DecodeString(rest)
	if err != nil {
		t.Fatalf("sealed value is not base64: %v", err)
	}
	return raw
}

// encodings of a value that must never appear in a sealed value or an error.
func encodings(plain string) map[string]string {
	return map[string]string{
		"plain":        plain,
		"base64":       base64.StdEncoding.EncodeToString([]byte(plain)),
		"base64 raw":   base64.RawStdEncoding.EncodeToString([]byte(plain)),
		"base64 url":   base64.RawURLEncoding.EncodeToString([]byte(plain)),
		"hex":          hex.EncodeToString([]byte(plain)),
		"hex upper":    strings.ToUpper(hex.EncodeToString([]byte(plain))),
		"plain middle": plain[3 : len(plain)-3],
	}
}

func assertNoLeak(t *testing.T, what, text, plain string) {
	t.Helper()
	for name, enc := range encodings(plain) {
		if strings.Contains(text, enc) {
			t.Errorf("%s contains the value (%s): %q", what, name, text)
		}
	}
}

func TestLoadBoxKeyMakesA0600KeyInA0700Home(t *testing.T) {
	home := filepath.Join(t.TempDir(), "home")
	if _, err := LoadBoxKey(home); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(filepath.Join(home, BoxKeyFile))
	if err != nil {
		t.Fatalf("%s was not made: %v", BoxKeyFile, err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("%s mode = %v, want 0600", BoxKeyFile, got)
	}
	if fi.Size() != 32 {
		t.Errorf("%s size = %d, want 32", BoxKeyFile, fi.Size())
	}
	hi, err := os.Stat(home)
	if err != nil {
		t.Fatal(err)
	}
	if got := hi.Mode().Perm(); got != 0o700 {
		t.Errorf("home mode = %v, want 0700", got)
	}
}

func TestLoadBoxKeyTightensAnOpenHome(t *testing.T) {
	home := t.TempDir()
	if err := os.Chmod(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadBoxKey(home); err != nil {
		t.Fatal(err)
	}
	hi, err := os.Stat(home)
	if err != nil {
		t.Fatal(err)
	}
	if got := hi.Mode().Perm(); got != 0o700 {
		t.Errorf("home mode = %v, want 0700", got)
	}
}

func TestLoadBoxKeyIsStableAcrossLoads(t *testing.T) {
	home := t.TempDir()
	k1, err := LoadBoxKey(home)
	if err != nil {
		t.Fatal(err)
	}
	before, err := os.ReadFile(filepath.Join(home, BoxKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	sealed := mustSealTo(t, k1.Public, "wandb", "WANDB_API_KEY", "v")

	k2, err := LoadBoxKey(home)
	if err != nil {
		t.Fatal(err)
	}
	if k1.Public != k2.Public {
		t.Errorf("public key changed across loads: %s then %s", k1.PublicString(), k2.PublicString())
	}
	if k1.PublicString() != k2.PublicString() {
		t.Errorf("PublicString changed across loads: %s then %s", k1.PublicString(), k2.PublicString())
	}
	after, err := os.ReadFile(filepath.Join(home, BoxKeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the second load rewrote the key file")
	}
	if got, err := k2.OpenSealed("wandb", "WANDB_API_KEY", sealed); err != nil || string(got) != "v" {
		t.Errorf("value sealed to the first load does not open under the second: %q, %v", got, err)
	}
}

func TestLoadBoxKeyInAnotherHomeIsAnotherKey(t *testing.T) {
	a, b := loadBoxKey(t), loadBoxKey(t)
	if a.Public == b.Public {
		t.Fatal("two homes got the same sealing key")
	}
}

func TestLoadBoxKeyRefusesAKeyFileOfTheWrongSizeAndKeepsIt(t *testing.T) {
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"short", bytes.Repeat([]byte{7}, 31)},
		{"long", bytes.Repeat([]byte{7}, 33)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			home := t.TempDir()
			path := filepath.Join(home, BoxKeyFile)
			if err := os.WriteFile(path, tc.data, 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadBoxKey(home)
			if err == nil || !strings.Contains(err.Error(), "want 32 bytes") {
				t.Fatalf("err = %v, want a size error", err)
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) {
				t.Error("a bad key file was replaced; it must be left for the operator to restore")
			}
		})
	}
}

func TestPublicStringRoundTripsThroughParsePublicKey(t *testing.T) {
	k := loadBoxKey(t)
	s := k.PublicString()
	for _, tc := range []struct {
		name, text string
	}{
		{"as printed", s},
		{"from a key file with a newline", s + "\n"},
		{"with surrounding blanks", "  " + s + " \r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := ParsePublicKey(tc.text)
			if err != nil {
				t.Fatalf("ParsePublicKey(%q): %v", tc.text, err)
			}
			if pub != k.Public {
				t.Errorf("ParsePublicKey(PublicString()) = %x, want %x", pub, k.Public)
			}
		})
	}
}

func TestParsePublicKeyRejectsGarbageAndWrongLengths(t *testing.T) {
	k := loadBoxKey(t)
	for _, tc := range []struct {
		name, text string
	}{
		{"empty", ""},
		{"blank", " \n"},
		{"not base64", "this is not a key!"},
		{"hex of the key", hex.EncodeToString(k.Public[:])},
		{"url base64 of the key", base64.RawURLEncoding.EncodeToString(k.Public[:])},
		{"31 bytes", base64.StdEncoding.EncodeToString(k.Public[:31])},
		{"33 bytes", base64.StdEncoding.EncodeToString(append(k.Public[:], 0))},
		{"64 bytes", base64.StdEncoding.EncodeToString(bytes.Repeat(k.Public[:], 2))},
		{"truncated", k.PublicString()[:20]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub, err := ParsePublicKey(tc.text)
			if err == nil {
				t.Fatalf("ParsePublicKey(%q) = %x, want an error", tc.text, pub)
			}
			msg := err.Error()
			for _, want := range []string{"public key", "32 bytes", "base64", "anycloud secrets seal --public-key"} {
				if !strings.Contains(msg, want) {
					t.Errorf("error %q does not mention %q", msg, want)
				}
			}
			if pub != ([32]byte{}) {
				t.Errorf("a rejected key returned %x, want zero", pub)
			}
		})
	}
}

// Low-order curve25519 points: every shared key with them is zero, so a
// value sealed to one opens for anyone who reads the manifest.
var lowOrderPoints = map[string]string{
	"zero":        "0000000000000000000000000000000000000000000000000000000000000000",
	"one":         "0100000000000000000000000000000000000000000000000000000000000000",
	"order 8 (a)": "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"order 8 (b)": "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"p-1":         "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"p":           "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"p+1":         "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"zero, high":  "0000000000000000000000000000000000000000000000000000000000000080",
}

func lowOrderPoint(t *testing.T, h string) [32]byte {
	t.Helper()
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad test point %q", h)
	}
	return [32]byte(b)
}

func TestParsePublicKeyRejectsLowOrderPoints(t *testing.T) {
	for name, h := range lowOrderPoints {
		t.Run(name, func(t *testing.T) {
			p := lowOrderPoint(t, h)
			pub, err := ParsePublicKey(base64.StdEncoding.EncodeToString(p[:]))
			if err == nil {
				t.Fatalf("ParsePublicKey accepted low-order point %s as %x; values sealed to it open for anyone", h, pub)
			}
			for _, want := range []string{"public key", "anycloud secrets seal --public-key"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not mention %q", err, want)
				}
			}
		})
	}
}

func TestSealToRefusesLowOrderPoints(t *testing.T) {
	const value = "wandb-api-key-0123456789abcdef"
	for name, h := range lowOrderPoints {
		t.Run(name, func(t *testing.T) {
			s, err := SealTo(lowOrderPoint(t, h), "wandb", "WANDB_API_KEY", []byte(value))
			if err == nil {
				t.Fatalf("SealTo a low-order point = %q, want an error", s)
			}
			if s != "" {
				t.Errorf("a refused sealing returned %q", s)
			}
			assertNoLeak(t, "error", err.Error(), value)
		})
	}
}

func TestSealToOutputIsPrefixedAndHidesTheValue(t *testing.T) {
	k := loadBoxKey(t)
	for _, value := range []string{
		"wandb-api-key-0123456789abcdef",
		"hunter2-hunter2-hunter2",
		"s3cr3t with spaces and ünïcödé",
	} {
		t.Run(value[:6], func(t *testing.T) {
			sealed := mustSealTo(t, k.Public, "wandb", "WANDB_API_KEY", value)
			if !strings.HasPrefix(sealed, "box:v1:") {
				t.Errorf("sealed value %q does not start with box:v1:", sealed)
			}
			assertNoLeak(t, "sealed value", sealed, value)
			if raw := payload(t, sealed); bytes.Contains(raw, []byte(value)) {
				t.Error("decoded payload contains the value in clear")
			}
		})
	}
}

func TestSealingTheSameValueTwiceDiffers(t *testing.T) {
	k := loadBoxKey(t)
	a := mustSealTo(t, k.Public, "wandb", "WANDB_API_KEY", "same-value")
	b := mustSealTo(t, k.Public, "wandb", "WANDB_API_KEY", "same-value")
	if a == b {
		t.Fatal("two sealings of the same value are identical; each must use fresh randomness")
	}
	pa, pb := payload(t, a), payload(t, b)
	if bytes.Equal(pa[:32], pb[:32]) {
		t.Error("two sealings share the ephemeral public key")
	}
}

func TestOpenSealedReturnsTheValueForTheSameBundleAndKey(t *testing.T) {
	k := loadBoxKey(t)
	for _, tc := range []struct {
		name, value string
	}{
		{"text", "wandb-api-key-0123456789abcdef"},
		{"empty", ""},
		{"with NUL bytes", "a\x00b\x00\x00c"},
		{"binary", string([]byte{0xff, 0x00, 0x01, 0xfe, 0x80})},
		{"long", strings.Repeat("x", 64<<10)},
		{"looks like an identity", "SecretBundle/other/KEY\x00v"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sealed := mustSealTo(t, k.Public, "wandb", "WANDB_API_KEY", tc.value)
			got, err := k.OpenSealed("wandb", "WANDB_API_KEY", sealed)
			if err != nil {
				t.Fatalf("OpenSealed: %v", err)
			}
			if string(got) != tc.value {
				t.Errorf("OpenSealed = %q, want %q", got, tc.value)
			}
		})
	}
}

func TestOpenSealedRefusesAValueRenamedOrMoved(t *testing.T) {
	const value = "wandb-api-key-0123456789abcdef"
	k := loadBoxKey(t)
	for _, tc := range []struct {
		name                string
		sealBundle, sealKey string
		openBundle, openKey string
	}{
		{"another bundle", "wandb", "WANDB_API_KEY", "hf", "WANDB_API_KEY"},
		{"a bundle with a longer name", "wandb", "WANDB_API_KEY", "wandb2", "WANDB_API_KEY"},
		{"a bundle with a shorter name", "wandb", "WANDB_API_KEY", "wand", "WANDB_API_KEY"},
		{"a bundle named by a prefix", "wandb-prod", "WANDB_API_KEY", "wandb", "WANDB_API_KEY"},
		{"another key", "wandb", "WANDB_API_KEY", "wandb", "HF_TOKEN"},
		{"a key with a longer name", "wandb", "WANDB_API_KEY", "wandb", "WANDB_API_KEY_2"},
		{"a key named by a prefix", "wandb", "WANDB_API_KEY_2", "wandb", "WANDB_API_KEY"},
		{"a key differing in case", "wandb", "WANDB_API_KEY", "wandb", "wandb_api_key"},
		{"bundle and key swapped", "wandb", "WANDB_API_KEY", "WANDB_API_KEY", "wandb"},
		{"another bundle and key", "wandb", "WANDB_API_KEY", "hf", "HF_TOKEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sealed := mustSealTo(t, k.Public, tc.sealBundle, tc.sealKey, value)
			got, err := k.OpenSealed(tc.openBundle, tc.openKey, sealed)
			if !errors.Is(err, ErrIdentity) {
				t.Fatalf("sealed for %s/%s, OpenSealed(%s, %s) = %q, %v; want ErrIdentity",
					tc.sealBundle, tc.sealKey, tc.openBundle, tc.openKey, got, err)
			}
			if got != nil {
				t.Errorf("a refused open returned %q", got)
			}
			assertNoLeak(t, "error", err.Error(), value)
		})
	}
}

func TestOpenSealedRefusesAValueSealedToAnotherControlPlane(t *testing.T) {
	const value = "wandb-api-key-0123456789abcdef"
	ours, theirs := loadBoxKey(t), loadBoxKey(t)
	sealed := mustSealTo(t, theirs.Public, "wandb", "WANDB_API_KEY", value)
	got, err := ours.OpenSealed("wandb", "WANDB_API_KEY", sealed)
	if !errors.Is(err, ErrOpen) {
		t.Fatalf("OpenSealed = %q, %v; want ErrOpen", got, err)
	}
	if errors.Is(err, ErrIdentity) || errors.Is(err, ErrNotSealed) {
		t.Errorf("err = %v, want only ErrOpen", err)
	}
	if got != nil {
		t.Errorf("a refused open returned %q", got)
	}
	assertNoLeak(t, "error", err.Error(), value)
	if v, err := theirs.OpenSealed("wandb", "WANDB_API_KEY", sealed); err != nil || string(v) != value {
		t.Errorf("the owning control plane cannot open it: %q, %v", v, err)
	}
}

func TestOpenSealedRefusesTamperedCiphertext(t *testing.T) {
	const value = "wandb-api-key-0123456789abcdef"
	k := loadBoxKey(t)
	sealed := mustSealTo(t, k.Public, "wandb", "WANDB_API_KEY", value)
	raw := payload(t, sealed)
	// raw is ephemeral public key (32) || box (16-byte tag || ciphertext).
	for _, tc := range []struct {
		name   string
		tamper func([]byte) []byte
	}{
		{"first byte of the ephemeral key", flip(0)},
		{"last byte of the ephemeral key", flip(31)},
		{"first byte of the tag", flip(32)},
		{"last byte of the tag", flip(47)},
		{"first byte of the ciphertext", flip(48)},
		{"last byte of the ciphertext", flip(len(raw) - 1)},
		{"truncated by one byte", func(b []byte) []byte { return b[:len(b)-1] }},
		{"extended by one byte", func(b []byte) []byte { return append(b, 0) }},
		{"shorter than the overhead", func(b []byte) []byte { return b[:40] }},
		{"empty payload", func([]byte) []byte { return nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := tc.tamper(bytes.Clone(raw))
			forged := boxPrefix + base64.StdEncoding.EncodeToString(bad)
			got, err := k.OpenSealed("wandb", "WANDB_API_KEY", forged)
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("OpenSealed(tampered) = %q, %v; want ErrOpen", got, err)
			}
			if got != nil {
				t.Errorf("a refused open returned %q", got)
			}
			assertNoLeak(t, "error", err.Error(), value)
		})
	}
	// The untampered value still opens: the failures above are the tampering.
	if got, err := k.OpenSealed("wandb", "WANDB_API_KEY", sealed); err != nil || string(got) != value {
		t.Errorf("untampered value: %q, %v", got, err)
	}
}

func flip(i int) func([]byte) []byte {
	return func(b []byte) []byte {
		b[i] ^= 0x01
		return b
	}
}

func TestOpenSealedRefusesWhatSealDidNotMake(t *testing.T) {
	const value = "wandb-api-key-0123456789abcdef"
	k := loadBoxKey(t)
	sealed := mustSealTo(t, k.Public, "wandb", "WANDB_API_KEY", value)
	body := strings.TrimPrefix(sealed, boxPrefix)
	for _, tc := range []struct {
		name, text string
	}{
		{"a plaintext pasted in", value},
		{"empty", ""},
		{"base64 of the value", base64.StdEncoding.EncodeToString([]byte(value))},
		{"the payload without the prefix", body},
		{"another version", "box:v2:" + body},
		{"the prefix in upper case", "BOX:V1:" + body},
		{"a blank before the prefix", " " + sealed},
		{"bad base64", boxPrefix + "!!not*base64!!"},
		{"the plaintext after the prefix", boxPrefix + value},
		{"a url-base64 character", boxPrefix + "-" + body[1:]},
		{"truncated base64", sealed[:len(sealed)-1]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := k.OpenSealed("wandb", "WANDB_API_KEY", tc.text)
			if !errors.Is(err, ErrNotSealed) {
				t.Fatalf("OpenSealed(%q) = %q, %v; want ErrNotSealed", tc.text, got, err)
			}
			if got != nil {
				t.Errorf("a refused open returned %q", got)
			}
			assertNoLeak(t, "error", err.Error(), value)
		})
	}
}

// TestSealedBundleFromCIOpensOnTheControlPlane follows `anycloud secrets
// seal`: the control plane prints its public key, a CI machine parses it
// and seals a bundle, and the control plane opens it at apply time.
func TestSealedBundleFromCIOpensOnTheControlPlane(t *testing.T) {
	controlPlane := loadBoxKey(t)
	printed := controlPlane.PublicString() + "\n" // as in anycloud.pub

	pub, err := ParsePublicKey(printed)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"WANDB_API_KEY":  "0123456789abcdef0123456789abcdef01234567",
		"WANDB_ENTITY":   "research-team",
		"WANDB_BASE_URL": "https://wandb.example.com",
		"WANDB_EMPTY":    "",
	}
	sealed := map[string]string{}
	for k, v := range want {
		sealed[k] = mustSealTo(t, pub, "wandb", k, v)
	}
	for k, s := range sealed {
		if want[k] != "" {
			assertNoLeak(t, "sealed "+k, s, want[k])
		}
	}

	got := map[string]string{}
	for k, s := range sealed {
		v, err := controlPlane.OpenSealed("wandb", k, s)
		if err != nil {
			t.Fatalf("open %s: %v", k, err)
		}
		got[k] = string(v)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("opened bundle differs (-want +got):\n%s", diff)
	}

	// Swapping two values between keys of the bundle is refused.
	if _, err := controlPlane.OpenSealed("wandb", "WANDB_ENTITY", sealed["WANDB_API_KEY"]); !errors.Is(err, ErrIdentity) {
		t.Errorf("a value moved to another key of the bundle: err = %v, want ErrIdentity", err)
	}
}
