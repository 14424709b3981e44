package manifests

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fieldErrors returns the problems in err, failing the test when err is
// not an ErrorList.
func fieldErrors(t *testing.T, err error) ErrorList {
	t.Helper()
	if err == nil {
		t.Fatal("got no error, want one")
	}
	var l ErrorList
	if !errors.As(err, &l) {
		t.Fatalf("error %v (%T) is not an ErrorList", err, err)
	}
	return l
}

// where is the location of a problem without its message, for tests that
// only care that a problem was found in the right place.
type where struct {
	File  string
	Doc   int
	Line  int
	Field string
}

func locations(l ErrorList) []where {
	var out []where
	for _, e := range l {
		out = append(out, where{e.File, e.Doc, e.Line, e.Field})
	}
	return out
}

func TestDecodeReadsEveryDocumentAndSkipsEmptyOnes(t *testing.T) {
	in := `# leading comment
apiVersion: anycloud.dev/v1
kind: Credentials
metadata: {name: my-aws}
spec:
  provider: aws
  aws: {region: us-east-1, profile: default}
---
# a document holding only a comment
---
---
apiVersion: anycloud.dev/v1
kind: Deployment
metadata:
  name: train
  labels: {team: ml}
spec:
  image: ghcr.io/me/train:latest
  command: [python, train.py]
  credentials: my-aws
  vmType: g6e.xlarge
  spot: true
  env: {EPOCHS: "3"}
  secrets: [hf, wandb]
  aws: {imageId: ami-123, region: eu-west-1}
---
`
	docs, err := Decode("stack.yaml", strings.NewReader(in))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}

	type summary struct {
		File  string
		Index int
		Line  int
		Kind  Kind
		Name  string
	}
	var got []summary
	for _, d := range docs {
		got = append(got, summary{d.File, d.Index, d.Line, d.Object.GetKind(), d.Object.GetMeta().Name})
	}
	want := []summary{
		{"stack.yaml", 1, 2, KindCredentials, "my-aws"},
		{"stack.yaml", 4, 12, KindDeployment, "train"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("documents (-want +got):\n%s", diff)
	}

	wantCreds := &Credentials{
		TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindCredentials},
		Metadata: ObjectMeta{Name: "my-aws"},
		Spec: CredentialsSpec{
			Provider: ProviderAWS,
			AWS:      &AWSCredentials{Region: "us-east-1", Profile: "default"},
		},
	}
	if diff := cmp.Diff(wantCreds, docs[0].Object); diff != "" {
		t.Errorf("credentials (-want +got):\n%s", diff)
	}
	wantDep := &Deployment{
		TypeMeta: TypeMeta{APIVersion: APIVersion, Kind: KindDeployment},
		Metadata: ObjectMeta{Name: "train", Labels: map[string]string{"team": "ml"}},
		Spec: DeploymentSpec{
			Image:       "ghcr.io/me/train:latest",
			Command:     []string{"python", "train.py"},
			Credentials: "my-aws",
			VMType:      "g6e.xlarge",
			Spot:        SpotSpec{Enabled: true},
			Env:         map[string]string{"EPOCHS": "3"},
			Secrets:     []string{"hf", "wandb"},
			AWS:         &DeploymentAWS{ImageID: "ami-123", Region: "eu-west-1"},
		},
	}
	if diff := cmp.Diff(wantDep, docs[1].Object); diff != "" {
		t.Errorf("deployment (-want +got):\n%s", diff)
	}
}

func TestDecodeOfNothingGivesNoDocumentsAndNoError(t *testing.T) {
	for name, in := range map[string]string{
		"empty":              "",
		"only a comment":     "# nothing here\n",
		"only separators":    "---\n---\n",
		"explicit null":      "---\n~\n",
		"separator, comment": "---\n# c\n",
	} {
		t.Run(name, func(t *testing.T) {
			docs, err := Decode("empty.yaml", strings.NewReader(in))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if len(docs) != 0 {
				t.Errorf("got %d documents, want none", len(docs))
			}
		})
	}
}

func TestDecodeAcceptsJSON(t *testing.T) {
	in := `{"apiVersion": "anycloud.dev/v1", "kind": "SecretBundle",
 "metadata": {"name": "hf"}, "spec": {"fromEnv": ["HF_TOKEN"]}}`
	docs, err := Decode("hf.json", strings.NewReader(in))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := []string{"HF_TOKEN"}
	if len(docs) != 1 {
		t.Fatalf("got %d documents, want 1", len(docs))
	}
	if diff := cmp.Diff(want, docs[0].Object.(*SecretBundle).Spec.FromEnv); diff != "" {
		t.Errorf("fromEnv (-want +got):\n%s", diff)
	}
}

func TestUnknownFieldNamesFileDocumentLineAndField(t *testing.T) {
	// The unknown field is in the second document so that a document
	// index that is not counted shows up.
	const first = `apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: hf}
spec: {fromEnv: [HF_TOKEN]}
---
`
	tests := []struct {
		name string
		doc  string
		want *FieldError
	}{
		{
			name: "top level",
			doc: `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spce:
  image: x
`,
			want: &FieldError{Line: 9, Field: "spce", Object: "Deployment/train", Msg: `unknown field "spce" (did you mean "spec"?)`},
		},
		{
			name: "in metadata",
			doc: `apiVersion: anycloud.dev/v1
kind: Deployment
metadata:
  name: train
  lables: {team: ml}
spec: {image: x}
`,
			want: &FieldError{Line: 10, Field: "metadata.lables", Object: "Deployment/train", Msg: `unknown field "lables" (did you mean "labels"?)`},
		},
		{
			name: "misspelt image in spec",
			doc: `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  imagee: ghcr.io/me/train:latest
`,
			want: &FieldError{Line: 10, Field: "spec.imagee", Object: "Deployment/train", Msg: `unknown field "imagee" (did you mean "image"?)`},
		},
		{
			name: "nested in spec.aws",
			doc: `apiVersion: anycloud.dev/v1
kind: Credentials
metadata: {name: my-aws}
spec:
  provider: aws
  aws:
    region: us-east-1
    profle: default
`,
			want: &FieldError{Line: 13, Field: "spec.aws.profle", Object: "Credentials/my-aws", Msg: `unknown field "profle" (did you mean "profile"?)`},
		},
		{
			name: "field names are case-sensitive",
			doc: `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec: {Image: x}
`,
			want: &FieldError{Line: 9, Field: "spec.Image", Object: "Deployment/train", Msg: `unknown field "Image" (did you mean "image"?)`},
		},
		{
			name: "nothing close enough to suggest",
			doc: `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec: {image: x, replicas: 3}
`,
			want: &FieldError{Line: 9, Field: "spec.replicas", Object: "Deployment/train", Msg: `unknown field "replicas"`},
		},
		{
			name: "object without a name",
			doc: `apiVersion: anycloud.dev/v1
kind: Deployment
spec: {imagee: x}
`,
			want: &FieldError{Line: 8, Field: "spec.imagee", Object: "Deployment", Msg: `unknown field "imagee" (did you mean "image"?)`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := Decode("app.yaml", strings.NewReader(first+tt.doc))
			got := fieldErrors(t, err)
			tt.want.File, tt.want.Doc = "app.yaml", 2
			if diff := cmp.Diff(ErrorList{tt.want}, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			// The good first document is still returned; the bad one is not.
			if len(docs) != 1 || docs[0].Object.GetKind() != KindSecretBundle {
				t.Errorf("got documents %+v, want only the SecretBundle", docs)
			}
		})
	}
}

func TestUnknownFieldErrorReadsAsFileLineDocumentField(t *testing.T) {
	in := `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  imagee: x
`
	_, err := Decode("app.yaml", strings.NewReader(in))
	want := `app.yaml:5: document 1 (Deployment/train): spec.imagee: unknown field "imagee" (did you mean "image"?)`
	if err == nil || err.Error() != want {
		t.Errorf("error = %v, want %s", err, want)
	}
}

func TestWrongTypeNamesLineAndWhatWasExpected(t *testing.T) {
	const head = `apiVersion: anycloud.dev/v1
kind: Deployment
metadata:
  name: train
`
	tests := []struct {
		name string
		body string
		want *FieldError
	}{
		{
			name: "string where bool expected",
			body: "spec:\n  image: x\n  spot: \"yes\"\n",
			want: &FieldError{Line: 7, Field: "spec.spot", Msg: "expected true or false (or a mapping of options), got a string"},
		},
		{
			name: "integer env value suggests quoting",
			body: "spec:\n  image: x\n  env:\n    EPOCHS: 3\n",
			want: &FieldError{Line: 8, Field: "spec.env.EPOCHS", Msg: `expected a string, got an integer (put it in quotes)`},
		},
		{
			name: "boolean where string expected",
			body: "spec:\n  image: x\n  vmType: true\n",
			want: &FieldError{Line: 7, Field: "spec.vmType", Msg: `expected a string, got a boolean (put it in quotes)`},
		},
		{
			name: "mapping where list expected",
			body: "spec:\n  image: x\n  secrets:\n    hf: yes\n",
			want: &FieldError{Line: 8, Field: "spec.secrets", Msg: "expected a list, got a mapping"},
		},
		{
			name: "string where list expected",
			body: "spec:\n  image: x\n  command: python train.py\n",
			want: &FieldError{Line: 7, Field: "spec.command", Msg: "expected a list, got a string"},
		},
		{
			name: "list item of the wrong type",
			body: "spec:\n  image: x\n  command: [python, 3]\n",
			want: &FieldError{Line: 7, Field: "spec.command[1]", Msg: `expected a string, got an integer (put it in quotes)`},
		},
		{
			name: "list where mapping expected",
			body: "spec:\n  image: x\n  env: [EPOCHS=3]\n",
			want: &FieldError{Line: 7, Field: "spec.env", Msg: "expected a mapping, got a list"},
		},
		{
			name: "string where struct expected",
			body: "spec: ghcr.io/me/train\n",
			want: &FieldError{Line: 5, Field: "spec", Msg: "expected a mapping, got a string"},
		},
		{
			name: "string where integer expected",
			body: "  generation: one\nspec: {image: x}\n",
			want: &FieldError{Line: 5, Field: "metadata.generation", Msg: "expected an integer, got a string"},
		},
		{
			name: "list where timestamp expected",
			body: "  creationTimestamp: [2024]\nspec: {image: x}\n",
			want: &FieldError{Line: 5, Field: "metadata.creationTimestamp", Msg: "expected a timestamp, got a list"},
		},
		{
			name: "integer env key",
			body: "spec:\n  image: x\n  env:\n    1: x\n",
			want: &FieldError{Line: 8, Field: "spec.env.1", Msg: `expected a string key, got an integer (quote it: "1")`},
		},
		{
			name: "key set twice",
			body: "spec:\n  image: x\n  image: y\n",
			want: &FieldError{Line: 7, Field: "spec.image", Msg: "set twice; first at line 6"},
		},
		{
			name: "env key set twice",
			body: "spec:\n  image: x\n  env: {A: a, A: b}\n",
			want: &FieldError{Line: 7, Field: "spec.env.A", Msg: "set twice; first at line 7"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Decode("train.yaml", strings.NewReader(head+tt.body))
			got := fieldErrors(t, err)
			tt.want.File, tt.want.Doc, tt.want.Object = "train.yaml", 1, "Deployment/train"
			if diff := cmp.Diff(ErrorList{tt.want}, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestTypeErrorsNeverEchoTheValue(t *testing.T) {
	// A value of the wrong type may be a secret: the error names the
	// field and the line, never the value.
	in := `apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: db}
spec:
  stringData:
    DB_PASSWORD: 982451653
    PIN: 2718.28
    ON: true
---
apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  image: x
  env: {HF_TOKEN: 31415926535}
`
	_, err := Decode("secrets.yaml", strings.NewReader(in))
	got := fieldErrors(t, err)
	want := []where{
		{"secrets.yaml", 1, 6, "spec.stringData.DB_PASSWORD"},
		{"secrets.yaml", 1, 7, "spec.stringData.PIN"},
		{"secrets.yaml", 1, 8, "spec.stringData.ON"},
		{"secrets.yaml", 2, 15, "spec.env.HF_TOKEN"},
	}
	if diff := cmp.Diff(want, locations(got)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	for _, value := range []string{"982451653", "2718.28", "true", "31415926535"} {
		if strings.Contains(err.Error(), value) {
			t.Errorf("error text contains the value %s:\n%v", value, err)
		}
	}
}

func TestNullLeavesTheZeroValue(t *testing.T) {
	in := `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train, labels: ~}
spec: {image: x, command: null, spot: ~}
`
	docs, err := Decode("train.yaml", strings.NewReader(in))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	d := docs[0].Object.(*Deployment)
	if d.Metadata.Labels != nil || d.Spec.Command != nil || d.Spec.Spot.Enabled {
		t.Errorf("got labels %v, command %v, spot %v; want zero values", d.Metadata.Labels, d.Spec.Command, d.Spec.Spot)
	}
}

func TestMalformedYAMLNamesFileDocumentAndLine(t *testing.T) {
	const good = `apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: hf}
spec: {fromEnv: [HF_TOKEN]}
`
	tests := []struct {
		name    string
		in      string
		wantDoc int
		// wantLine is the problem's line. yaml.v3 reports some parser
		// errors one line early (go-yaml/yaml#205, #542), so one line
		// either side is accepted.
		wantLine int
		wantDocs int // documents decoded before the problem
	}{
		{
			name:     "bad indentation",
			in:       "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata:\n  name: train\nspec:\n  image: x\n   spot: true\n",
			wantDoc:  1,
			wantLine: 7,
		},
		{
			name:     "unclosed quote",
			in:       "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata:\n  name: train\nspec:\n  image: \"x\n  spot: true\n",
			wantDoc:  1,
			wantLine: 6,
		},
		{
			name:     "unclosed flow mapping",
			in:       "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: train\nspec:\n  image: x\n",
			wantDoc:  1,
			wantLine: 3,
		},
		{
			name:     "in the second document",
			in:       good + "---\napiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata:\n  name: train\nspec:\n  image: x\n    spot: true\n",
			wantDoc:  2,
			wantLine: 12,
			wantDocs: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := Decode("bad.yaml", strings.NewReader(tt.in))
			got := fieldErrors(t, err)
			if len(got) != 1 {
				t.Fatalf("got %d problems, want 1: %v", len(got), got)
			}
			e := got[0]
			if e.File != "bad.yaml" || e.Doc != tt.wantDoc {
				t.Errorf("located in %s document %d, want bad.yaml document %d", e.File, e.Doc, tt.wantDoc)
			}
			if e.Line < tt.wantLine-1 || e.Line > tt.wantLine+1 {
				t.Errorf("line %d, want %d give or take one", e.Line, tt.wantLine)
			}
			if !strings.HasPrefix(e.Msg, "malformed YAML: ") || strings.Contains(e.Msg, "yaml: ") {
				t.Errorf("message %q, want it to start with %q and not repeat yaml's prefix", e.Msg, "malformed YAML: ")
			}
			if !strings.HasPrefix(err.Error(), "bad.yaml:") {
				t.Errorf("error %q does not start with the file name", err)
			}
			if len(docs) != tt.wantDocs {
				t.Errorf("got %d documents, want %d", len(docs), tt.wantDocs)
			}
		})
	}
}

func TestBadTypeMetaIsReported(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want ErrorList
	}{
		{
			name: "missing apiVersion",
			in:   "kind: Deployment\nmetadata: {name: a}\nspec: {image: x}\n",
			want: ErrorList{{Line: 1, Field: "apiVersion", Msg: "required (use anycloud.dev/v1)"}},
		},
		{
			name: "other apiVersion",
			in:   "kind: Deployment\napiVersion: anycloud.dev/v2\nmetadata: {name: a}\nspec: {image: x}\n",
			want: ErrorList{{Line: 2, Field: "apiVersion", Msg: `unsupported apiVersion "anycloud.dev/v2" (use anycloud.dev/v1)`}},
		},
		{
			name: "kubernetes apiVersion",
			in:   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec: {image: x}\n",
			want: ErrorList{{Line: 1, Field: "apiVersion", Msg: `unsupported apiVersion "apps/v1" (use anycloud.dev/v1)`}},
		},
		{
			name: "missing kind",
			in:   "apiVersion: anycloud.dev/v1\nmetadata: {name: a}\nspec: {image: x}\n",
			want: ErrorList{{Line: 1, Field: "kind", Msg: "required (one of Deployment, SecretBundle, Credentials)"}},
		},
		{
			name: "unknown kind",
			in:   "apiVersion: anycloud.dev/v1\nmetadata: {name: a}\nkind: Pod\n",
			want: ErrorList{{Line: 3, Field: "kind", Msg: `unknown kind "Pod" (one of Deployment, SecretBundle, Credentials)`}},
		},
		{
			name: "kind in the wrong case",
			in:   "apiVersion: anycloud.dev/v1\nkind: deployment\n",
			want: ErrorList{{Line: 2, Field: "kind", Msg: `unknown kind "deployment" (one of Deployment, SecretBundle, Credentials)`}},
		},
		{
			name: "both wrong",
			in:   "apiVersion: v1\nkind: Pod\n",
			want: ErrorList{
				{Line: 1, Field: "apiVersion", Msg: `unsupported apiVersion "v1" (use anycloud.dev/v1)`},
				{Line: 2, Field: "kind", Msg: `unknown kind "Pod" (one of Deployment, SecretBundle, Credentials)`},
			},
		},
		{
			name: "not a mapping",
			in:   "- apiVersion: anycloud.dev/v1\n",
			want: ErrorList{{Line: 1, Msg: "expected a mapping with apiVersion, kind, metadata and spec, got a list"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := Decode("x.yaml", strings.NewReader(tt.in))
			got := fieldErrors(t, err)
			for _, e := range tt.want {
				e.File, e.Doc = "x.yaml", 1
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			if len(docs) != 0 {
				t.Errorf("got %d documents, want none", len(docs))
			}
		})
	}
}

func TestDecodeReportsEveryProblemAtOnce(t *testing.T) {
	in := `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  imagee: x
  spot: "yes"
  env: {EPOCHS: 3}
---
apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: hf}
spec: {fromEnv: [HF_TOKEN]}
---
apiVersion: anycloud.dev/v1
kind: Secret
metadata: {name: wandb}
---
apiVersion: anycloud.dev/v1
kind: Credentials
metadata: {name: my-aws, uid: 1}
spec: {provider: aws}
`
	docs, err := Decode("all.yaml", strings.NewReader(in))
	got := fieldErrors(t, err)
	want := []where{
		{"all.yaml", 1, 5, "spec.imagee"},
		{"all.yaml", 1, 6, "spec.spot"},
		{"all.yaml", 1, 7, "spec.env.EPOCHS"},
		{"all.yaml", 3, 15, "kind"},
		{"all.yaml", 4, 20, "metadata.uid"},
	}
	if diff := cmp.Diff(want, locations(got)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if !strings.HasPrefix(err.Error(), "5 problems:\n  all.yaml:5: ") {
		t.Errorf("error text %q does not list the problems", err)
	}
	if len(docs) != 1 || docs[0].Object.GetMeta().Name != "hf" {
		t.Errorf("got documents %+v, want only the one without problems (hf)", docs)
	}
}

func TestFieldErrorText(t *testing.T) {
	tests := []struct {
		name string
		err  *FieldError
		want string
	}{
		{"everything", &FieldError{File: "a.yaml", Doc: 2, Line: 7, Field: "spec.image", Object: "Deployment/train", Msg: "required"}, "a.yaml:7: document 2 (Deployment/train): spec.image: required"},
		{"no line", &FieldError{File: "a.yaml", Doc: 2, Field: "kind", Msg: "required"}, "a.yaml: document 2: kind: required"},
		{"file only", &FieldError{File: "missing", Msg: "read: no such file"}, "missing: read: no such file"},
		{"object without a file", &FieldError{Object: "Deployment/train", Field: "spec.image", Msg: "required"}, "Deployment/train: spec.image: required"},
		{"message only", &FieldError{Msg: "boom"}, "boom"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.err.Error(); got != tt.want {
				t.Errorf("Error() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestErrorListIsNilWhenEmptyAndListsEveryProblem(t *testing.T) {
	if err := ErrorList(nil).Err(); err != nil {
		t.Errorf("empty list: Err() = %v, want nil", err)
	}
	one := ErrorList{{Field: "a", Msg: "x"}}
	if got, want := one.Err().Error(), "a: x"; got != want {
		t.Errorf("one problem: %q, want %q", got, want)
	}
	two := ErrorList{{Field: "a", Msg: "x"}, {Field: "b", Msg: "y"}}
	if got, want := two.Err().Error(), "2 problems:\n  a: x\n  b: y"; got != want {
		t.Errorf("two problems: %q, want %q", got, want)
	}
}

// writeFiles creates files (relative path → content) under dir.
func writeFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func bundleYAML(name string) string {
	return "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: " + name + "}\nspec: {fromEnv: [HF_TOKEN]}\n"
}

type loaded struct {
	File  string
	Index int
	Name  string
}

func summarize(docs []Document) []loaded {
	var out []loaded
	for _, d := range docs {
		out = append(out, loaded{d.File, d.Index, d.Object.GetMeta().Name})
	}
	return out
}

func TestLoadReadsFilesAndDirectories(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"b.yaml":            bundleYAML("b") + "---\n" + bundleYAML("b2"),
		"a.yml":             bundleYAML("a"),
		"c.JSON":            `{"apiVersion": "anycloud.dev/v1", "kind": "SecretBundle", "metadata": {"name": "c"}, "spec": {"fromEnv": ["X"]}}`,
		"README.md":         "not: a manifest\n",
		"notes.txt":         "not: a manifest\n",
		"sub/d.yaml":        bundleYAML("d"),
		"sub/deeper/e.yaml": bundleYAML("e"),
		".git/f.yaml":       bundleYAML("f"),
		"sub/.hidden/g.yml": bundleYAML("g"),
	})
	// A symbolic link to a directory is followed when it is named itself.
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(filepath.Join(dir, "sub"), link); err != nil {
		t.Fatal(err)
	}
	j := func(p string) string { return filepath.Join(dir, filepath.FromSlash(p)) }

	tests := []struct {
		name    string
		sources []string
		opts    LoadOptions
		want    []loaded
	}{
		{
			name:    "one file",
			sources: []string{j("b.yaml")},
			want:    []loaded{{j("b.yaml"), 1, "b"}, {j("b.yaml"), 2, "b2"}},
		},
		{
			name:    "directory: only manifests, sorted, no subdirectories",
			sources: []string{dir},
			want:    []loaded{{j("a.yml"), 1, "a"}, {j("b.yaml"), 1, "b"}, {j("b.yaml"), 2, "b2"}, {j("c.JSON"), 1, "c"}},
		},
		{
			name:    "recursive: subdirectories too, hidden ones skipped",
			sources: []string{dir},
			opts:    LoadOptions{Recursive: true},
			want: []loaded{
				{j("a.yml"), 1, "a"}, {j("b.yaml"), 1, "b"}, {j("b.yaml"), 2, "b2"}, {j("c.JSON"), 1, "c"},
				{j("sub/d.yaml"), 1, "d"}, {j("sub/deeper/e.yaml"), 1, "e"},
			},
		},
		{
			name:    "sources in the order given",
			sources: []string{j("sub/d.yaml"), j("a.yml")},
			want:    []loaded{{j("sub/d.yaml"), 1, "d"}, {j("a.yml"), 1, "a"}},
		},
		{
			name:    "symbolic link to a directory",
			sources: []string{link},
			want:    []loaded{{filepath.Join(link, "d.yaml"), 1, "d"}},
		},
		{
			name:    "stdin",
			sources: []string{"-"},
			opts:    LoadOptions{Stdin: strings.NewReader(bundleYAML("from-stdin"))},
			want:    []loaded{{"-", 1, "from-stdin"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			docs, err := Load(tt.sources, tt.opts)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if diff := cmp.Diff(tt.want, summarize(docs)); diff != "" {
				t.Errorf("documents (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadReadsANamedFileWhateverItsExtension(t *testing.T) {
	p := filepath.Join(t.TempDir(), "deploy.txt")
	writeFiles(t, filepath.Dir(p), map[string]string{"deploy.txt": bundleYAML("hf")})
	docs, err := Load([]string{p}, LoadOptions{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if diff := cmp.Diff([]loaded{{p, 1, "hf"}}, summarize(docs)); diff != "" {
		t.Errorf("documents (-want +got):\n%s", diff)
	}
}

func TestLoadDefaultsAndValidatesWithLocations(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"ok.yaml": "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: ok}\nspec: {image: x}\n",
	})
	docs, err := Load([]string{filepath.Join(dir, "ok.yaml")}, LoadOptions{})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if got := docs[0].Object.(*Deployment).Spec.Credentials; got != LocalCredentials {
		t.Errorf("credentials = %q, want the default %q", got, LocalCredentials)
	}

	bad := `apiVersion: anycloud.dev/v1
kind: Deployment
metadata:
  name: Train
spec:
  command: [x]
  env:
    EPOCHS: "3"
    my-key: "1"
---
apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: empty}
spec: {}
`
	_, err = Load([]string{"-"}, LoadOptions{Stdin: strings.NewReader(bad)})
	got := fieldErrors(t, err)
	want := []where{
		{"-", 1, 4, "metadata.name"},
		{"-", 1, 5, "spec.image"}, // missing: the line of spec
		{"-", 1, 9, "spec.env.my-key"},
		{"-", 2, 14, "spec"},
	}
	if diff := cmp.Diff(want, locations(got)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if got[0].Object != "Deployment/Train" {
		t.Errorf("object = %q, want Deployment/Train", got[0].Object)
	}
}

func TestLoadReportsProblemsInEverySource(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"a.yaml": "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: a}\nspec: {fromEnv: [A], sealed: x}\n",
		"b.yaml": "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: b}\nspec: {imagee: x}\n",
		"c.yaml": bundleYAML("c"),
	})
	missing := filepath.Join(dir, "nope.yaml")
	docs, err := Load([]string{dir, missing, "-"}, LoadOptions{})
	got := fieldErrors(t, err)
	want := []where{
		{filepath.Join(dir, "a.yaml"), 1, 4, "spec.sealed"},
		{filepath.Join(dir, "b.yaml"), 1, 4, "spec.imagee"},
		{missing, 0, 0, ""},
		{"-", 0, 0, ""},
	}
	if diff := cmp.Diff(want, locations(got)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	if !strings.Contains(got[2].Msg, "no such file or directory") {
		t.Errorf("missing path: %q does not say that %s does not exist", got[2], missing)
	}
	if got[3].Msg != "no standard input" {
		t.Errorf("stdin without a reader: %q", got[3].Msg)
	}
	if diff := cmp.Diff([]loaded{{filepath.Join(dir, "c.yaml"), 1, "c"}}, summarize(docs)); diff != "" {
		t.Errorf("documents (-want +got):\n%s", diff)
	}
}

func TestLoadMissingPathIsNamed(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "manifests")
	_, err := Load([]string{missing}, LoadOptions{Recursive: true})
	got := fieldErrors(t, err)
	if len(got) != 1 || got[0].File != missing || !strings.Contains(got[0].Msg, "no such file or directory") {
		t.Errorf("error = %v, want one problem naming %s as missing", err, missing)
	}
}

func TestSameObjectTwiceIsRefusedNamingBothPlaces(t *testing.T) {
	dir := t.TempDir()
	writeFiles(t, dir, map[string]string{
		"a.yaml": bundleYAML("hf") + "---\n" + bundleYAML("hf"),
		"b.yaml": bundleYAML("other") + "---\n" + bundleYAML("hf"),
		// The same name under another kind is another object.
		"c.yaml": "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: hf}\nspec: {image: x}\n",
	})
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	_, err := Load([]string{dir}, LoadOptions{})
	got := fieldErrors(t, err)
	want := ErrorList{
		{File: a, Doc: 2, Line: 8, Field: "metadata.name", Object: "SecretBundle/hf", Msg: "SecretBundle/hf is defined twice; first in " + a + " document 1"},
		{File: b, Doc: 2, Line: 8, Field: "metadata.name", Object: "SecretBundle/hf", Msg: "SecretBundle/hf is defined twice; first in " + a + " document 1"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("errors (-want +got):\n%s", diff)
	}
}

func TestBundleWithNoKeysInAFileIsRefused(t *testing.T) {
	tests := []struct {
		name string
		spec string
		line int
	}{
		{"no spec", "", 1},
		{"empty spec", "spec: {}\n", 4},
		{"empty lists and maps", "spec:\n  fromEnv: []\n  sealed: {}\n  stringData: {}\n", 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: hf}\n" + tt.spec
			_, err := Load([]string{"-"}, LoadOptions{Stdin: strings.NewReader(in)})
			got := fieldErrors(t, err)
			want := ErrorList{{File: "-", Doc: 1, Line: tt.line, Field: "spec", Object: "SecretBundle/hf", Msg: "a bundle needs at least one key in fromEnv, sealed or stringData"}}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

func TestCheckDoesNotCallTwoNamelessObjectsTheSame(t *testing.T) {
	in := "apiVersion: anycloud.dev/v1\nkind: Deployment\nspec: {image: x}\n---\napiVersion: anycloud.dev/v1\nkind: Deployment\nspec: {image: y}\n"
	docs, err := Decode("x.yaml", strings.NewReader(in))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	got := Check(docs)
	want := []where{{"x.yaml", 1, 1, "metadata.name"}, {"x.yaml", 2, 5, "metadata.name"}}
	if diff := cmp.Diff(want, locations(got)); diff != "" {
		t.Errorf("problems (-want +got):\n%s", diff)
	}
	for _, e := range got {
		if e.Msg != "required" {
			t.Errorf("%v: want only \"required\"", e)
		}
	}
}

func TestLineOfFallsBackToTheNearestEnclosingField(t *testing.T) {
	in := `apiVersion: anycloud.dev/v1
kind: Deployment
metadata:
  name: train
spec:
  image: x
  secrets:
    - hf
    - wandb
`
	docs, err := Decode("x.yaml", strings.NewReader(in))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	d := &docs[0]
	for path, want := range map[string]int{
		"metadata.name":    4,
		"spec":             5,
		"spec.secrets":     7,
		"spec.secrets[1]":  9,
		"spec.secrets[7]":  7,
		"spec.env.EPOCHS":  5,
		"status.phase":     1,
		"":                 1,
		"metadata.labels":  3,
		"spec.aws.imageId": 5,
	} {
		if got := d.LineOf(path); got != want {
			t.Errorf("LineOf(%q) = %d, want %d", path, got, want)
		}
	}
}

func TestSpotIsABooleanOrAnObjectOfOptions(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want SpotSpec
	}{
		{"true", SpotSpec{Enabled: true}},
		{"false", SpotSpec{}},
		{"{fallback: onDemand, onRebalance: replace}", SpotSpec{Enabled: true, Fallback: "onDemand", OnRebalance: "replace"}},
		{"{}", SpotSpec{Enabled: true}},
	} {
		in := "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  image: x\n  spot: " + tc.yaml + "\n"
		docs, err := Decode("d.yaml", strings.NewReader(in))
		if err != nil {
			t.Errorf("spot: %s: %v", tc.yaml, err)
			continue
		}
		got := docs[0].Object.(*Deployment).Spec.Spot
		if got != tc.want {
			t.Errorf("spot: %s = %+v, want %+v", tc.yaml, got, tc.want)
		}
		// What is stored reads back the same, in the short form when it can.
		b, _ := json.Marshal(docs[0].Object)
		back, err := Unmarshal(KindDeployment, b)
		if err != nil || back.(*Deployment).Spec.Spot != tc.want {
			t.Errorf("spot: %s does not round-trip: %s %v", tc.yaml, b, err)
		}
	}
	in := "apiVersion: anycloud.dev/v1\nkind: Deployment\nmetadata: {name: d}\nspec:\n  image: x\n  spot: {fallbak: onDemand}\n"
	if _, err := Decode("d.yaml", strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), "spec.spot.fallbak") {
		t.Errorf("an unknown spot option: %v", err)
	}
}
