package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/seal"
)

// binaryCanaries are values that cannot be delivered as env: a NUL byte
// or invalid UTF-8 in the middle of recognisable text. Each is refused
// where it comes in, and neither its text nor any part of it is found
// anywhere afterwards.
var binaryCanaries = map[string]string{
	"argNUL":        "BINCANARY-arg-nul-71c2\x00tail-arg-nul",
	"argUTF8":       "BINCANARY-arg-utf8-8d3e\xfftail-arg-utf8",
	"envNUL":        "BINCANARY-env-nul-19af\x00tail-env-nul",
	"envUTF8":       "BINCANARY-env-utf8-2be4\xc3\x28tail-env-utf8",
	"fileNUL":       "BINCANARY-file-nul-3cd5\x00tail-file-nul",
	"fileUTF8":      "BINCANARY-file-utf8-4de6\xfe\xfftail-file-utf8",
	"stringDataNUL": "BINCANARY-sd-nul-5ef7",
	"fromEnvNUL":    "BINCANARY-fromenv-nul-6f08\x00tail-fromenv-nul",
	"fromEnvUTF8":   "BINCANARY-fromenv-utf8-7019\xfftail-fromenv-utf8",
	"sealedNUL":     "BINCANARY-sealed-nul-812a\x00tail-sealed-nul",
	"sealedUTF8":    "BINCANARY-sealed-utf8-923b\xfftail-sealed-utf8",
	"apiNUL":        "BINCANARY-api-nul-a34c\x00tail-api-nul",
	"apiUTF8":       "BINCANARY-api-utf8-b45d\xfftail-api-utf8",
	"awsNUL":        "BINCANARY-aws-nul-c56e\x00tail-aws-nul",
}

// binaryLeaks finds any canary, whole or the text on either side of its
// bad byte, raw, with U+FFFD for the bad byte, or base64/hex encoded.
func binaryLeaks(data []byte) []string {
	var found []string
	for name, v := range binaryCanaries {
		forms := []string{v, strings.ToValidUTF8(v, "\uFFFD"), base64.StdEncoding.EncodeToString([]byte(v)), hex.EncodeToString([]byte(v))}
		for _, part := range strings.FieldsFunc(v, func(r rune) bool { return r == 0 || r == '\uFFFD' }) {
			if len(part) >= 8 {
				forms = append(forms, part)
			}
		}
		for _, f := range forms {
			if bytes.Contains(data, []byte(f)) {
				found = append(found, name)
				break
			}
		}
	}
	return found
}

// TestValuesThatCannotBeEnvAreRefusedAtEveryEntryPointAndNeverLeak puts a
// NUL byte and invalid UTF-8 in through every entry point: each is
// refused with an error naming the bundle and key, and afterwards no
// output, API answer, log line or file in the home holds any of it.
func TestValuesThatCannotBeEnvAreRefusedAtEveryEntryPointAndNeverLeak(t *testing.T) {
	e := newEnv(t)
	var outputs []result
	refused := func(wantKey string, stdin string, args ...string) {
		t.Helper()
		r := e.runIn(stdin, args...)
		outputs = append(outputs, r)
		if r.err == nil {
			t.Errorf("%s\nsucceeded, want a refusal", r)
			return
		}
		if !strings.Contains(r.stderr, wantKey) || !(strings.Contains(r.stderr, "NUL byte") || strings.Contains(r.stderr, "not valid UTF-8")) {
			t.Errorf("%s\nwant an error naming %s and why", r, wantKey)
		}
	}
	dir := t.TempDir()

	// CLI arguments, --from-env, --from-file; for new and for seal.
	for _, verb := range []string{"new", "seal"} {
		refused("key TOKEN", "", "secrets", verb, "s1", "TOKEN="+binaryCanaries["argNUL"])
		refused("key TOKEN", "", "secrets", verb, "s1", "TOKEN="+binaryCanaries["argUTF8"])
		e.vars["BIN_NUL"], e.vars["BIN_UTF8"] = binaryCanaries["envNUL"], binaryCanaries["envUTF8"]
		refused("key BIN_NUL", "", "secrets", verb, "s2", "--from-env", "BIN_NUL")
		refused("key BIN_UTF8", "", "secrets", verb, "s2", "--from-env", "BIN_UTF8")
		refused("key BLOB", "", "secrets", verb, "s3", "--from-file", "BLOB="+writeFile(t, dir, "nul.bin", binaryCanaries["fileNUL"]))
		refused("key BLOB", "", "secrets", verb, "s3", "--from-file", "BLOB="+writeFile(t, dir, "utf8.bin", binaryCanaries["fileUTF8"]))
	}

	// Manifests: stringData with a NUL escape, fromEnv with both.
	m := writeFile(t, dir, "m/sd.yaml", "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: sd}\nspec:\n  stringData:\n    PASSWORD: \""+binaryCanaries["stringDataNUL"]+"\\0tail-sd-nul\"\n")
	refused("spec.stringData.PASSWORD", "", "apply", "-f", m)
	e.vars["FE_NUL"], e.vars["FE_UTF8"] = binaryCanaries["fromEnvNUL"], binaryCanaries["fromEnvUTF8"]
	m = writeFile(t, dir, "m/fe.yaml", "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: fe}\nspec:\n  fromEnv: [FE_NUL, FE_UTF8]\n")
	refused(`secret bundle "fe" key FE_NUL`, "", "apply", "-f", m)

	// Sealed values made by a sealer that did not check (an older
	// version, another tool): the control plane refuses them on open.
	sock := filepath.Join(e.home, api.SocketFile)
	pubText, err := api.NewClient(sock).SealingKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := seal.ParsePublicKey(pubText)
	sn, _ := seal.SealTo(pub, "sealed", "A", []byte(binaryCanaries["sealedNUL"]))
	su, _ := seal.SealTo(pub, "sealed", "B", []byte(binaryCanaries["sealedUTF8"]))
	m = writeFile(t, dir, "m/sealed.yaml", "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: sealed}\nspec:\n  sealed:\n    A: "+sn+"\n    B: "+su+"\n")
	refused(`secret bundle "sealed" key A`, "", "apply", "-f", m)

	// Credentials' secret key, from stdin and from the environment.
	refused("secret access key", binaryCanaries["awsNUL"]+"\n", "credentials", "new", "c1", "--provider", "aws", "--access-key-id", "AKID", "--secret-access-key-stdin")
	e.vars["AWS_SECRET_ACCESS_KEY"] = binaryCanaries["awsNUL"]
	refused("secret access key", "", "credentials", "new", "c2", "--provider", "aws", "--access-key-id", "AKID")
	delete(e.vars, "AWS_SECRET_ACCESS_KEY")

	// The API, raw: a \u0000 escape, and raw invalid UTF-8 (which JSON
	// decoding would silently turn into U+FFFD).
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	post := func(body []byte) []byte {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "POST", "http://x/v1/apply", bytes.NewReader(body))
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode < 400 {
			t.Errorf("the API accepted %q: %s", body, b)
		}
		return b
	}
	bundle := `{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"viaapi"},"spec":{}}`
	nul, _ := json.Marshal(binaryCanaries["apiNUL"])
	answers := [][]byte{
		post([]byte(`{"items":[{"object":` + bundle + `,"secrets":{"K":` + string(nul) + `}}]}`)),
		post([]byte(`{"items":[{"object":` + bundle + `,"secrets":{"K":"` + binaryCanaries["apiUTF8"] + `"}}]}`)),
	}
	if !bytes.Contains(answers[0], []byte(`secret bundle \"viaapi\" key K`)) {
		t.Errorf("the API's refusal does not name the bundle and key: %s", answers[0])
	}

	// Nothing of any of them anywhere.
	for _, r := range outputs {
		if l := binaryLeaks([]byte(r.stdout + r.stderr)); len(l) > 0 {
			t.Errorf("%v leaked in the output of anycloud %s:\n%s%s", l, strings.Join(r.args, " "), r.stdout, r.stderr)
		}
	}
	for _, a := range answers {
		if l := binaryLeaks(a); len(l) > 0 {
			t.Errorf("%v leaked in an API answer: %s", l, a)
		}
	}
	for _, kind := range []string{"secretbundles", "credentials"} {
		if l := binaryLeaks([]byte(e.must("get", kind, "-o", "json").stdout)); len(l) > 0 {
			t.Errorf("%v in get %s", l, kind)
		}
	}
	if l := binaryLeaks([]byte(e.log.String())); len(l) > 0 {
		t.Errorf("%v leaked in the control plane log", l)
	}
	filepath.Walk(e.home, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			if l := binaryLeaks(b); len(l) > 0 {
				t.Errorf("%v leaked in %s", l, p)
			}
		}
		return nil
	})
	// And nothing was stored.
	if got := e.must("get", "sb", "-o", "name").stdout; got != "" {
		t.Errorf("bundles were stored: %q", got)
	}
}
