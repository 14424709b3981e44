package manifests

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const sha = "3f2c5e9a1b7d4c6e8f0a2b4c6d8e0f1a3b5c7d9e"

func TestSourceDefaultsToWorkspaceAndAnExposedToken(t *testing.T) {
	d := validDeployment()
	d.Spec.Source = &DeploymentSource{Git: "https://github.com/me/train", Commit: sha}
	Default(d)
	if d.Spec.Source.Path != DefaultSourcePath || d.Spec.Source.ExposeToken == nil || !*d.Spec.Source.ExposeToken {
		t.Errorf("defaults: %+v", d.Spec.Source)
	}
	if !d.Spec.Source.TokenExposed() {
		t.Error("TokenExposed after defaults")
	}
	no := false
	d.Spec.Source.ExposeToken = &no
	Default(d)
	if d.Spec.Source.TokenExposed() {
		t.Error("exposeToken: false is kept")
	}
	if errs := Validate(d); len(errs) > 0 {
		t.Errorf("valid source: %v", errs)
	}
}

func TestSourceValidation(t *testing.T) {
	tests := []struct {
		name string
		src  DeploymentSource
		want ErrorList
	}{
		{name: "github", src: DeploymentSource{Git: "https://github.com/me/train.git", Commit: sha, Path: "/src/train"}},
		{name: "sha-256 repository", src: DeploymentSource{Git: "http://127.0.0.1:8080/me/train", Commit: strings.Repeat("ab", 32)}},
		{name: "missing everything", src: DeploymentSource{}, want: ErrorList{
			{Field: "spec.source.git", Msg: "required"},
			{Field: "spec.source.commit", Msg: `want a full commit SHA (40 lower-case hex digits), got "": a branch or tag can move`},
		}},
		{name: "a branch", src: DeploymentSource{Git: "https://github.com/me/train", Commit: "main"}, want: ErrorList{
			{Field: "spec.source.commit", Msg: `want a full commit SHA (40 lower-case hex digits), got "main": a branch or tag can move`},
		}},
		{name: "a short sha", src: DeploymentSource{Git: "https://github.com/me/train", Commit: sha[:12]}, want: ErrorList{
			{Field: "spec.source.commit", Msg: `want a full commit SHA (40 lower-case hex digits), got "` + sha[:12] + `": a branch or tag can move`},
		}},
		{name: "credentials in the URL are refused without being quoted", src: DeploymentSource{Git: "https://x-access-token:gho_SECRET@github.com/me/train", Commit: sha}, want: ErrorList{
			{Field: "spec.source.git", Msg: "holds credentials: remove them; `anycloud login` gives git the token"},
		}},
		{name: "an ssh remote", src: DeploymentSource{Git: "ssh://git@github.com/me/train", Commit: sha}, want: ErrorList{
			{Field: "spec.source.git", Msg: "holds credentials: remove them; `anycloud login` gives git the token"},
		}},
		{name: "an scp-like remote", src: DeploymentSource{Git: "git@github.com:me/train.git", Commit: sha}, want: ErrorList{
			{Field: "spec.source.git", Msg: "want an https:// URL (ssh remotes cannot use the GitHub token)"},
		}},
		{name: "no repository path", src: DeploymentSource{Git: "https://github.com/", Commit: sha}, want: ErrorList{
			{Field: "spec.source.git", Msg: `want https://HOST/OWNER/REPO, got "https://github.com/"`},
		}},
		{name: "relative path", src: DeploymentSource{Git: "https://github.com/me/train", Commit: sha, Path: "workspace"}, want: ErrorList{
			{Field: "spec.source.path", Msg: `want an absolute path, got "workspace"`},
		}},
		{name: "root", src: DeploymentSource{Git: "https://github.com/me/train", Commit: sha, Path: "/"}, want: ErrorList{
			{Field: "spec.source.path", Msg: "cannot be the container's root"},
		}},
		{name: "unclean path", src: DeploymentSource{Git: "https://github.com/me/train", Commit: sha, Path: "/a/../b"}, want: ErrorList{
			{Field: "spec.source.path", Msg: `want a clean path ("/b"), got "/a/../b"`},
		}},
		{name: "a colon would split the mount", src: DeploymentSource{Git: "https://github.com/me/train", Commit: sha, Path: "/a:/etc"}, want: ErrorList{
			{Field: "spec.source.path", Msg: `"/a:/etc": a mount path cannot hold ':', ',', '\' or control characters`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validDeployment()
			src := tt.src
			d.Spec.Source = &src
			got := Validate(d)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if strings.Contains(got.Error(), "gho_SECRET") {
				t.Errorf("an error quotes the credentials: %v", got)
			}
		})
	}
}

func TestSourceDecodesStrictlyWithLines(t *testing.T) {
	in := `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  image: ghcr.io/me/train:latest
  source:
    git: https://github.com/me/train
    commit: main
    branch: main
    exposeToken: "no"
`
	_, err := Decode("train.yaml", strings.NewReader(in))
	l := fieldErrors(t, err)
	want := []where{{"train.yaml", 1, 9, "spec.source.branch"}, {"train.yaml", 1, 10, "spec.source.exposeToken"}}
	if diff := cmp.Diff(want, locations(l)); diff != "" {
		t.Errorf("(-want +got):\n%s\n%v", diff, l)
	}

	in = strings.Replace(strings.Replace(in, "    branch: main\n", "", 1), `exposeToken: "no"`, "exposeToken: false", 1)
	docs, err := Decode("train.yaml", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	l = Check(docs)
	want = []where{{"train.yaml", 1, 8, "spec.source.commit"}}
	if diff := cmp.Diff(want, locations(l)); diff != "" {
		t.Errorf("(-want +got):\n%s\n%v", diff, l)
	}
	src := docs[0].Object.(*Deployment).Spec.Source
	if src.TokenExposed() || src.Path != DefaultSourcePath {
		t.Errorf("decoded %+v", src)
	}
}
