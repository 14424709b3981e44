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
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/state"
)

// canaries are recognisable secret values, one per entry point.
var canaries = map[string]string{
	"arg":         "CANARY-arg-4f1d2c9a",
	"fromEnv":     "CANARY-fromenv-8b3e7d10",
	"fromFile":    "CANARY-fromfile-a9c0e4b2",
	"stringData":  "CANARY-stringdata-5e6f7a8b",
	"manifestEnv": "CANARY-manifestenv-c1d2e3f4",
	"awsSecret":   "CANARY-awssecret-0a1b2c3d",
	"sealed":      "CANARY-sealed-77aa88bb",
	"overwrite":   "CANARY-overwrite-13579bdf",
}

// leaks returns every canary whose bytes, or their base64 or hex forms,
// appear in data.
func leaks(data []byte) []string {
	var found []string
	for name, v := range canaries {
		for _, form := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), base64.RawURLEncoding.EncodeToString([]byte(v)), hex.EncodeToString([]byte(v))} {
			if bytes.Contains(data, []byte(form)) {
				found = append(found, name)
				break
			}
		}
	}
	return found
}

func (e *env) checkNoLeak(what string, data []byte) {
	e.t.Helper()
	if l := leaks(data); len(l) > 0 {
		e.t.Errorf("secret value(s) %v leaked in %s:\n%s", l, what, data)
	}
}

// TestSecretValuesNeverLeak puts a recognisable value in through every
// entry point, then looks for its bytes in the state file, every API
// route's response, the control plane log, the output of every command and
// error messages.
func TestSecretValuesNeverLeak(t *testing.T) {
	e := newEnv(t)
	var outputs []result
	run := func(args ...string) result {
		t.Helper()
		r := e.run(args...)
		outputs = append(outputs, r)
		return r
	}
	must := func(args ...string) result {
		t.Helper()
		r := run(args...)
		if r.err != nil {
			t.Fatalf("%s\nfailed: %v", r, r.err)
		}
		return r
	}

	dir := t.TempDir()
	// Entry points: CLI args, --from-env, --from-file.
	e.vars["FROM_ENV_KEY"] = canaries["fromEnv"]
	secretFile := writeFile(t, dir, "token.txt", canaries["fromFile"])
	must("secrets", "new", "viaarg", "TOKEN="+canaries["arg"])
	must("secrets", "new", "viaenv", "--from-env", "FROM_ENV_KEY")
	must("secrets", "new", "viafile", "--from-file", "TOKEN="+secretFile)
	// Overwrite one: the new value is sealed too.
	must("secrets", "new", "viaarg", "TOKEN="+canaries["overwrite"])

	// Manifests with stringData and fromEnv.
	e.vars["MANIFEST_TOKEN"] = canaries["manifestEnv"]
	manifestDir := filepath.Join(dir, "m")
	writeFile(t, manifestDir, "bundles.yaml", `apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: viamanifest}
spec:
  fromEnv: [MANIFEST_TOKEN]
  stringData:
    PASSWORD: `+canaries["stringData"]+`
`)
	writeFile(t, manifestDir, "deploy.yaml", `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  image: anycloud-demo:test
  env: {EPOCHS: "3"}
  secrets: [viamanifest, viaarg, viaenv, viafile]
`)
	must("apply", "-f", manifestDir)
	must("apply", "-f", manifestDir, "--dry-run")

	// Credentials with a static secret key, from the environment and
	// from stdin.
	e.vars["AWS_SECRET_ACCESS_KEY"] = canaries["awsSecret"]
	must("credentials", "new", "aws1", "--provider", "aws", "--access-key-id", "AKIDEXAMPLE", "--region", "us-east-1")
	delete(e.vars, "AWS_SECRET_ACCESS_KEY")
	r := e.runIn(canaries["awsSecret"]+"\n", "credentials", "new", "aws2", "--provider", "aws", "--access-key-id", "AKIDEXAMPLE2", "--secret-access-key-stdin")
	outputs = append(outputs, r)
	if r.err != nil {
		t.Fatalf("%s\n%v", r, r.err)
	}

	// A sealed manifest: the output of seal contains no plaintext, and
	// applying it stores the value.
	sealOut := must("secrets", "seal", "viaseal", "TOKEN="+canaries["sealed"])
	writeFile(t, dir, "sealed.yaml", sealOut.stdout)
	must("apply", "-f", filepath.Join(dir, "sealed.yaml"))

	// Submit with bundles and a sensitive-looking env key (advisory).
	must("submit", testenv.DemoImage, "--name", "job1", "--credentials", "aws1", "--secret", "viaseal", "--secret", "viaarg", "--env", "MODE=fast")

	// Every reading command, in every format.
	for _, kind := range []string{"deployments", "secretbundles", "credentials"} {
		for _, o := range []string{"", "wide", "json", "yaml", "name"} {
			args := []string{"get", kind}
			if o != "" {
				args = append(args, "-o", o)
			}
			must(args...)
		}
	}
	for _, o := range []string{"json", "yaml"} {
		must("get", "sb", "viamanifest", "-o", o)
		must("get", "creds", "aws1", "-o", o)
		must("get", "deploy", "train", "-o", o)
	}
	must("describe", "deployment", "train")
	must("describe", "sb", "viamanifest")
	must("describe", "creds", "aws1")
	must("status")
	must("status", "train", "-o", "json")
	must("secrets", "list")
	must("secrets", "list", "-o", "json")
	must("credentials", "list", "-o", "yaml")
	must("resubmit", "train")

	// Failures: their messages must not carry values either.
	for _, args := range [][]string{
		{"secrets", "delete", "viaarg"},
		{"credentials", "delete", "aws1"},
		{"secrets", "new", "bad", canaries["arg"]},               // a value without KEY=
		{"secrets", "new", "Bad_Name", "K=" + canaries["arg"]},   // bad bundle name
		{"secrets", "new", "dup", "K=" + canaries["arg"], "K=x"}, // key twice
		{"secrets", "seal", "viaseal", "--key", "not-a-key", "K=" + canaries["sealed"]},
	} {
		r := run(args...)
		if r.err == nil {
			t.Errorf("%s\nsucceeded, want a failure", r)
		}
	}
	badDir := filepath.Join(dir, "bad")
	writeFile(t, badDir, "bad.yaml", `apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: bad}
spec:
  stringData:
    "not a key": `+canaries["stringData"]+`
    PIN: 12345
  sealed:
    X: `+canaries["sealed"]+`
`)
	if r := run("apply", "-f", badDir); r.err == nil {
		t.Errorf("%s\nsucceeded, want a failure", r)
	}
	// A sealed value moved to another bundle name is refused.
	moved := strings.Replace(sealOut.stdout, "name: viaseal", "name: renamed", 1)
	writeFile(t, dir, "moved.yaml", moved)
	if r := run("apply", "-f", filepath.Join(dir, "moved.yaml")); r.err == nil || !strings.Contains(r.stderr, "another bundle") {
		t.Errorf("%s\nwant a refusal naming another bundle", r)
	}

	for _, r := range outputs {
		e.checkNoLeak("output of anycloud "+strings.Join(r.args, " "), []byte(r.stdout+r.stderr))
	}

	// Every route of the API, read raw.
	e.checkRoutes()

	// The control plane's log.
	e.checkNoLeak("the control plane log", []byte(e.log.String()))

	// The state file, read while the control plane runs (bbolt pages are
	// on disk after each commit).
	db, err := os.ReadFile(filepath.Join(e.home, state.DBFile))
	if err != nil {
		t.Fatal(err)
	}
	e.checkNoLeak("state.db", db)
	// Every file in the home.
	filepath.Walk(e.home, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			e.checkNoLeak(p, b)
		}
		return nil
	})
}

// checkRoutes calls every route of the API directly and checks bodies.
func (e *env) checkRoutes() {
	t := e.t
	sock := filepath.Join(e.home, api.SocketFile)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	call := func(method, path string, body any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, method, "http://x"+path, rd)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		data, _ := io.ReadAll(resp.Body) // a watch ends at the deadline
		resp.Body.Close()
		e.checkNoLeak(method+" "+path, data)
	}
	call("GET", "/v1/version", nil)
	call("GET", "/v1/sealing-key", nil)
	for _, p := range []string{"deployments", "secretbundles", "credentials"} {
		call("GET", "/v1/"+p, nil)
		call("GET", "/v1/"+p+"?watch=true", nil)
	}
	for _, p := range []string{"deployments/train", "secretbundles/viaarg", "secretbundles/viamanifest", "secretbundles/viaseal",
		"secretbundles/viaenv", "secretbundles/viafile", "credentials/aws1", "credentials/aws2"} {
		call("GET", "/v1/"+p, nil)
		call("GET", "/v1/"+p+"/events", nil)
	}
	call("DELETE", "/v1/secretbundles/viaarg", nil) // 409 in use
	call("DELETE", "/v1/credentials/aws1", nil)     // 409 in use
	call("POST", "/v1/deployments/train/resubmit", nil)
	// Apply answers must not echo what they were sent, valid or not.
	bundle := json.RawMessage(`{"apiVersion":"anycloud.dev/v1","kind":"SecretBundle","metadata":{"name":"viaapi"},"spec":{}}`)
	call("POST", "/v1/apply", api.ApplyRequest{Items: []api.ApplyItem{{Object: bundle, Secrets: map[string]string{"K": canaries["arg"]}}}})
	call("POST", "/v1/apply", api.ApplyRequest{Items: []api.ApplyItem{{Object: bundle, Secrets: map[string]string{"bad key": canaries["arg"]}}}})
	deploy := json.RawMessage(`{"apiVersion":"anycloud.dev/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"image":"x"}}`)
	call("POST", "/v1/apply", api.ApplyRequest{Items: []api.ApplyItem{{Object: deploy, Secrets: map[string]string{"K": canaries["arg"]}}}})
	call("POST", "/v1/apply", map[string]any{"items": []any{map[string]any{"object": canaries["arg"]}}})
}
