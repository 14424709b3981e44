package cli

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anycloud/anycloud/manifests"
)

const goodDeployment = `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: good}
spec:
  image: anycloud-demo:test
`

// TestBadInputIsReportedAndNothingIsWritten applies a directory that holds
// a valid object beside a bad one: exit status 1, an error naming the file,
// document and field, and not even the valid object written.
func TestBadInputIsReportedAndNothingIsWritten(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		bad  string
		want []string // substrings of the error
	}{
		{
			name: "malformed YAML",
			bad:  "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: x\n",
			want: []string{"bad.yaml", "document 1", "malformed YAML"},
		},
		{
			name: "unknown field",
			bad:  "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  image: i\n  vmtype: t\n",
			want: []string{"bad.yaml:6", "document 1", "spec.vmtype", `unknown field "vmtype"`, `did you mean "vmType"`},
		},
		{
			name: "missing name",
			bad:  "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {}\nspec: {image: i}\n",
			want: []string{"bad.yaml", "metadata.name", "required"},
		},
		{
			name: "bad apiVersion",
			bad:  "apiVersion: anycloud.dev/v2\nkind: Deployment\nmetadata: {name: x}\nspec: {image: i}\n",
			want: []string{"bad.yaml:1", "apiVersion", `"anycloud.dev/v2"`},
		},
		{
			name: "duplicate object",
			bad:  goodDeployment,
			want: []string{"Deployment/good is defined twice", "bad.yaml document 1", "good.yaml:3"},
		},
		{
			name: "missing credentials",
			bad:  "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {image: i, credentials: nope}\n",
			want: []string{"bad.yaml", "document 1", `credentials "nope" not found`},
		},
		{
			name: "second of several problems is reported too",
			bad:  "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {image: i, spot: maybe}\n---\napiVersion: anycloud.dev/v1\nkind: Nope\n",
			want: []string{"2 problems", "spec.spot", "document 2", `unknown kind "Nope"`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			writeFile(t, dir, "good.yaml", goodDeployment)
			writeFile(t, dir, "bad.yaml", tc.bad)
			r := e.run("apply", "-f", dir)
			if r.code != 1 {
				t.Fatalf("%s\nexit %d, want 1", r, r.code)
			}
			for _, w := range tc.want {
				if !strings.Contains(r.stderr, w) {
					t.Errorf("error does not mention %q:\n%s", w, r.stderr)
				}
			}
			if strings.Contains(r.stderr, filepath.Join(dir, "bad.yaml")) == false && strings.Contains(r.stderr, "bad.yaml") {
				t.Errorf("error names bad.yaml without its path:\n%s", r.stderr)
			}
			got := e.must("get", "deployments", "-o", "name")
			if strings.TrimSpace(got.stdout) != "" {
				t.Errorf("objects were written by a failed apply:\n%s", got.stdout)
			}
		})
	}
}

func TestApplyCreatesThenReportsUnchangedAndConfigured(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	e.vars["DEMO_TOKEN"] = "t0ken-value"
	writeFile(t, dir, "all.yaml", `apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: demo}
spec: {fromEnv: [DEMO_TOKEN]}
---
`+goodDeployment+`  secrets: [demo]
`)
	r := e.must("apply", "-f", dir)
	for _, w := range []string{"secretbundle/demo created", "deployment/good created"} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("missing %q in:\n%s", w, r.stdout)
		}
	}
	r = e.must("apply", "-f", dir)
	if strings.Count(r.stdout, "unchanged") != 2 {
		t.Errorf("second apply should leave both unchanged:\n%s", r.stdout)
	}
	e.vars["DEMO_TOKEN"] = "rotated-value"
	r = e.must("apply", "-f", dir, "--dry-run")
	if !strings.Contains(r.stdout, "~ secretbundle/demo (update)") || !strings.Contains(r.stdout, "secret values: (changed)") || strings.Contains(r.stdout, "rotated-value") {
		t.Errorf("dry run should show the rotation:\n%s", r.stdout)
	}
	var b manifests.SecretBundle
	json.Unmarshal([]byte(e.must("get", "sb", "demo", "-o", "json").stdout), &b)
	if b.Metadata.Generation != 1 {
		t.Errorf("dry run wrote: generation %d", b.Metadata.Generation)
	}
	e.must("apply", "-f", dir)
	json.Unmarshal([]byte(e.must("get", "sb", "demo", "-o", "json").stdout), &b)
	if b.Metadata.Generation != 2 {
		t.Errorf("rotated value: generation %d, want 2", b.Metadata.Generation)
	}
}

func TestFromEnvThatIsUnsetIsAnErrorNamingTheField(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "b.yaml", "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: hf}\nspec:\n  fromEnv: [HF_TOKEN]\n")
	r := e.run("apply", "-f", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "spec.fromEnv[0]") || !strings.Contains(r.stderr, "HF_TOKEN is not set") {
		t.Fatalf("%s\nwant exit 1 naming spec.fromEnv[0]", r)
	}
}

func TestStringDataIsAcceptedWithAWarning(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "b.yaml", "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: x}\nspec:\n  stringData: {K: v4lue}\n")
	r := e.must("apply", "-f", dir)
	if !strings.Contains(r.stderr, "Warning:") || !strings.Contains(r.stderr, "spec.stringData") {
		t.Errorf("no stringData warning:\n%s", r)
	}
}

func TestSensitiveEnvKeyGetsAnAdvisoryButIsApplied(t *testing.T) {
	e := newEnv(t)
	r := e.must("submit", "img:1", "--name", "j", "--env", "HF_TOKEN=abc", "--env", "EPOCHS=3")
	if !strings.Contains(r.stderr, "HF_TOKEN") || !strings.Contains(r.stderr, "anycloud secrets new") || strings.Contains(r.stderr, "EPOCHS") {
		t.Errorf("want an advisory naming HF_TOKEN only:\n%s", r)
	}
	if !strings.Contains(r.stdout, "deployment/j created") {
		t.Errorf("not applied:\n%s", r)
	}
}

func TestSubmitWritesTheSameDeploymentAsAManifest(t *testing.T) {
	e := newEnv(t)
	e.must("secrets", "new", "hf", "HF_TOKEN=x")
	e.must("submit", "ghcr.io/me/train:latest", "--name", "train", "--vm-type", "g6e.xlarge", "--spot", "--secret", "hf", "--env", "EPOCHS=3", "--", "python", "train.py")
	var d manifests.Deployment
	if err := json.Unmarshal([]byte(e.must("get", "deploy", "train", "-o", "json").stdout), &d); err != nil {
		t.Fatal(err)
	}
	want := manifests.DeploymentSpec{
		Image: "ghcr.io/me/train:latest", Command: []string{"python", "train.py"}, Credentials: "local",
		VMType: "g6e.xlarge", Spot: manifests.SpotSpec{Enabled: true}, Env: map[string]string{"EPOCHS": "3"}, Secrets: []string{"hf"},
	}
	if got, _ := json.Marshal(d.Spec); string(got) != string(must(json.Marshal(want))) {
		t.Errorf("spec = %s\nwant   %s", got, must(json.Marshal(want)))
	}
	r := e.must("submit", "ghcr.io/me/train:latest")
	if !strings.Contains(r.stdout, "deployment/train-") {
		t.Errorf("default name should come from the image: %s", r.stdout)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestUsageErrorsExitWithStatus2(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{
		{"get"},
		{"get", "pods"},
		{"get", "deploy", "-o", "xml"},
		{"apply"},
		{"apply", "--bogus"},
		{"delete", "deploy"},
		{"secrets", "new", "x"},
		{"submit"},
		{"credentials", "new", "x"},
	} {
		if r := e.run(args...); r.code != 2 {
			t.Errorf("%s\nexit %d, want 2", r, r.code)
		}
	}
}

func TestGetReportsMissingObjectWithExit1(t *testing.T) {
	e := newEnv(t)
	r := e.run("get", "deploy", "nope")
	if r.code != 1 || !strings.Contains(r.stderr, "not found") {
		t.Errorf("%s\nwant exit 1, not found", r)
	}
}

func TestApplyErrorsFromTheStoreNameTheFileAndDocument(t *testing.T) {
	e := newEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "creds.yaml", "apiVersion: anycloud.dev/v1\nkind: Credentials\nmetadata: {name: local}\nspec: {provider: local}\n")
	r := e.run("apply", "-f", dir)
	if r.code != 1 || !strings.Contains(r.stderr, "creds.yaml") || !strings.Contains(r.stderr, "document 1") || !strings.Contains(r.stderr, "built in") {
		t.Errorf("exit %d\n%s", r.code, r.stderr)
	}
}
