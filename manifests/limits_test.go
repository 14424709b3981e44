package manifests

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const canary = "sk-CANARY-0x5eed"

func TestTyposNeverEchoTheValue(t *testing.T) {
	// Each is a value typed where a key belongs. The error names the
	// file, line and field, and never the value.
	for _, tc := range []struct {
		name  string
		spec  string
		field string
		line  int
	}{
		{"missing colon in a flow mapping", "  stringData: {TOKEN " + canary + "}\n", "spec.stringData", 5},
		{"missing colon in a block mapping", "  stringData:\n    TOKEN " + canary + ":\n", "spec.stringData", 6},
		{"equals sign instead of a colon", "  stringData:\n    TOKEN=" + canary + ":\n", "spec.stringData", 6},
		{"value as a sealed key", "  sealed:\n    " + canary + ": box:v1:AAAA\n", "spec.sealed", 6},
		{"value as a fromEnv name", "  fromEnv: [" + canary + "]\n", "spec.fromEnv", 5},
		{"value as an unknown field", "  " + canary + " x: y\n  fromEnv: [A]\n", "spec", 5},
		{"value as a key set twice", "  stringData:\n    " + canary + ": a\n    " + canary + ": b\n", "spec.stringData", 7},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: s}\nspec:\n" + tc.spec
			_, err := Load([]string{"-"}, LoadOptions{Stdin: strings.NewReader(in)})
			l := fieldErrors(t, err)
			if strings.Contains(err.Error(), canary) || strings.Contains(err.Error(), "CANARY") {
				t.Fatalf("the error echoes the value:\n%v", err)
			}
			if got := locations(l)[0]; got.Field != tc.field || got.Line != tc.line {
				t.Errorf("first problem at %+v, want field %s line %d\n%v", got, tc.field, tc.line, err)
			}
		})
	}
}

func TestValuesThatCannotBeEnvAreRefusedNamingTheKey(t *testing.T) {
	for _, tc := range []struct {
		name, value, want string
	}{
		{"a NUL byte", `"ab\0cd"`, "NUL byte"},
		{"a value over 64 KiB", strings.Repeat("x", MaxValueBytes+1), "limit is 64 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: s}\nspec:\n  stringData:\n    OK: fine\n    BAD: " + tc.value + "\n"
			_, err := Load([]string{"-"}, LoadOptions{Stdin: strings.NewReader(in)})
			l := fieldErrors(t, err)
			if len(l) != 1 || l[0].Field != "spec.stringData.BAD" || l[0].Line != 7 || !strings.Contains(l[0].Msg, tc.want) {
				t.Fatalf("got %v, want one problem at spec.stringData.BAD line 7 saying %q", err, tc.want)
			}
		})
	}
}

func TestCheckSecretValue(t *testing.T) {
	for _, tc := range []struct {
		value string
		want  string
	}{
		{"plain", ""},
		{"multi\nline\tvalue ünïcode", ""},
		{strings.Repeat("x", MaxValueBytes), ""},
		{strings.Repeat("x", MaxValueBytes+1), "the value is 64.0 KiB; the limit is 64 KiB per value"},
		{"a\x00b", "NUL byte"},
		{"a\xffb", "not valid UTF-8"},
	} {
		got := CheckSecretValue(tc.value)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("CheckSecretValue(%.20q) = %q, want %q", tc.value, got, tc.want)
		}
		if got != "" && strings.Contains(got, tc.value) {
			t.Errorf("message %q quotes the value", got)
		}
	}
}

func TestCheckSecretsNamesBundleAndKeyAndBoundsTheBundle(t *testing.T) {
	got := CheckSecrets(`secret bundle "b"`, map[string]string{"BIN": "\x00" + canary, canary + " x": "\xff"})
	want := []string{
		`secret bundle "b" key BIN: the value contains a NUL byte, which an environment variable cannot carry (binary data: encode it, e.g. base64)`,
		`secret bundle "b" key <not a valid name; not shown, as it may be a value>: the value is not valid UTF-8, which an environment variable cannot carry intact (binary data: encode it, e.g. base64)`,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	big := map[string]string{}
	for i := range 20 {
		big[fmt.Sprintf("K%d", i)] = strings.Repeat("v", MaxValueBytes)
	}
	if got := CheckSecrets("b", big); len(got) != 1 || !strings.Contains(got[0], "the limit is 1 MiB per bundle") {
		t.Errorf("a 1.25 MiB bundle: %v, want the per-bundle limit", got)
	}
}

func TestManifestFileOverTheLimitIsRefused(t *testing.T) {
	in := "# " + strings.Repeat("x", MaxFileBytes) + "\n"
	_, err := Decode("big.yaml", strings.NewReader(in))
	l := fieldErrors(t, err)
	if len(l) != 1 || !strings.Contains(l[0].Error(), "big.yaml: larger than 8 MiB, the limit per manifest file") {
		t.Errorf("got %v", err)
	}
}

// TestDecodeIsLinearInTheKeysOfABundle: yaml.v3's map decoding compares
// every key with every other, and a 40,000-key bundle took 14 s. The
// decoder must do it in a linear pass.
// BenchmarkDecodeBundle decodes bundles of 10,000 and 40,000 keys: linear
// decoding takes four times as long for four times the keys (yaml.v3's own
// mapping decode compared every key with every other: 14 s at 40,000).
// A speed goal, so a benchmark, not a timed test.
func BenchmarkDecodeBundle(b *testing.B) {
	for _, n := range []int{10000, 40000} {
		var sb strings.Builder
		sb.WriteString("apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: big}\nspec:\n  stringData:\n")
		for i := range n {
			fmt.Fprintf(&sb, "    K%d: v%d\n", i, i)
		}
		in := sb.String()
		b.Run(fmt.Sprintf("keys=%d", n), func(b *testing.B) {
			for b.Loop() {
				docs, err := Decode("big.yaml", strings.NewReader(in))
				if err != nil || len(docs[0].Object.(*SecretBundle).Spec.StringData) != n {
					b.Fatalf("decode %d keys: %v", n, err)
				}
			}
		})
	}
}

func TestAliasesCannotExpandWithoutBound(t *testing.T) {
	var b strings.Builder
	b.WriteString("apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  image: x\n  command: &a [")
	for i := range 2000 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("xxxxxxxx")
	}
	b.WriteString("]\n  secrets: [")
	// Each alias of a list in a list of strings is a type error: the walk
	// refuses it without expanding.
	for i := range 2000 {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("*a")
	}
	b.WriteString("]\n")
	start := time.Now()
	_, err := Decode("bomb.yaml", strings.NewReader(b.String()))
	if err == nil {
		t.Fatal("decoded a list of lists into a list of strings")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("took %v", d)
	}
}

func TestDecodeJSONIsAsStrictAsYAML(t *testing.T) {
	for _, tc := range []struct {
		name, in, field, msg string
	}{
		{"unknown top-level field", `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x"},"extra":1}`, "", `unknown field "extra"`},
		{"unknown spec field", `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"imagee":"x"}}`, "", `unknown field "imagee"`},
		{"unknown nested field", `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","aws":{"regin":"x"}}}`, "", `unknown field "regin"`},
		{"a key set twice", `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","image":"y"}}`, "spec", `key "image" is set twice`},
		{"a secret key set twice", `{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"s"},"spec":{"stringData":{"` + canary + `":"a","` + canary + `":"b"}}}`, "spec.stringData", "a key is set twice"},
		{"a wrong type", `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","spot":"yes"}}`, "spec.spot", "expected true or false, got a JSON string"},
		{"trailing data", `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x"}} {}`, "", "unexpected data after the object"},
		{"an unknown kind", `{"apiVersion":"anycloud.dev/v1","kind":"Pod"}`, "kind", `unknown kind "Pod"`},
		{"a value as a field name", `{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x","` + canary + ` y":1}}`, "", "unknown field (not shown"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeJSON([]byte(tc.in))
			fe, ok := err.(*FieldError)
			if !ok {
				t.Fatalf("got %v (%T), want a *FieldError", err, err)
			}
			if fe.Field != tc.field || !strings.Contains(fe.Msg, tc.msg) {
				t.Errorf("got field %q message %q, want field %q message containing %q", fe.Field, fe.Msg, tc.field, tc.msg)
			}
			if strings.Contains(fe.Error(), "CANARY") {
				t.Errorf("the error echoes a value: %v", fe)
			}
		})
	}
	o, err := DecodeJSON([]byte(`{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d","labels":{"a.b/c":"x"}},"spec":{"image":"x","env":{"A":"1"}}}`))
	if err != nil || o.(*Deployment).Spec.Env["A"] != "1" {
		t.Fatalf("a valid object: %v", err)
	}
}

func TestDefaultApplySetOfADirectoryDependsOnRecursion(t *testing.T) {
	dir := t.TempDir()
	file := dir + "/a.yaml"
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	flat, deep := DefaultApplySet([]string{dir}, false), DefaultApplySet([]string{dir}, true)
	if flat == deep {
		t.Errorf("apply -f DIR and apply -f DIR -R share the apply set %s: a prune without -R would remove what -R applied from subdirectories", flat)
	}
	if DefaultApplySet([]string{file}, false) != DefaultApplySet([]string{file}, true) {
		t.Error("-R changed the set of a single file, which it does not change the reading of")
	}
	if DefaultApplySet([]string{dir}, true) != deep {
		t.Error("not stable")
	}
}
