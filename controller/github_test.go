package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
)

func TestWithGitHubGivesTheTokenToTheRequestAndGITHUBTOKENOnlyWhenExposed(t *testing.T) {
	const token = "gho_CANARYcontroller0123"
	login := &provider.GitHubAuth{Token: token, User: "octocat", Registries: []string{"ghcr.io"}, GitURL: "https://github.com"}
	no := false
	src := func(expose *bool) *manifests.DeploymentSource {
		return &manifests.DeploymentSource{Git: "https://github.com/me/train", Commit: strings.Repeat("a", 40), Path: "/workspace", ExposeToken: expose}
	}
	tests := []struct {
		name      string
		source    *manifests.DeploymentSource
		env       map[string]string
		login     *provider.GitHubAuth
		wantEnv   string // GITHUB_TOKEN's value, "" for absent
		wantToken bool
	}{
		{name: "no source: the token for pulls, no GITHUB_TOKEN", login: login, wantToken: true},
		{name: "a source: GITHUB_TOKEN", source: src(nil), login: login, wantEnv: token, wantToken: true},
		{name: "exposeToken false", source: src(&no), login: login, wantToken: true},
		{name: "env sets GITHUB_TOKEN itself", source: src(nil), env: map[string]string{"GITHUB_TOKEN": "mine"}, login: login, wantEnv: "mine", wantToken: true},
		{name: "not logged in", source: src(nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Controller{github: func(context.Context) (*provider.GitHubAuth, error) { return tt.login, nil }}
			d := &manifests.Deployment{Spec: manifests.DeploymentSpec{Source: tt.source}}
			req := provider.LaunchRequest{Env: tt.env}
			if err := c.withGitHub(context.Background(), d, &req); err != nil {
				t.Fatal(err)
			}
			if got := req.Env["GITHUB_TOKEN"]; got != tt.wantEnv {
				t.Errorf("GITHUB_TOKEN %q, want %q", got, tt.wantEnv)
			}
			if (req.GitHub != nil) != tt.wantToken {
				t.Errorf("request's GitHub %v", req.GitHub)
			}
			if (req.Source != nil) != (tt.source != nil) || (req.Source != nil && (req.Source.Commit != tt.source.Commit || req.Source.Path != "/workspace")) {
				t.Errorf("request's source %+v", req.Source)
			}
			if s := fmt.Sprintf("%v %+v", req, req); strings.Contains(s, token) && tt.wantEnv != token {
				t.Errorf("the request prints the token: %s", s)
			}
		})
	}
}

func TestWithGitHubFailsOnlyWhenTheSourceNeedsTheLogin(t *testing.T) {
	broken := errors.New("cipher key missing")
	c := &Controller{github: func(context.Context) (*provider.GitHubAuth, error) { return nil, broken }}
	req := provider.LaunchRequest{}
	if err := c.withGitHub(context.Background(), &manifests.Deployment{}, &req); err != nil || req.GitHub != nil {
		t.Errorf("no source: %v, %v", err, req.GitHub)
	}
	d := &manifests.Deployment{Spec: manifests.DeploymentSpec{Source: &manifests.DeploymentSource{Git: "https://github.com/me/x", Commit: strings.Repeat("b", 40)}}}
	if err := c.withGitHub(context.Background(), d, &req); !errors.Is(err, broken) {
		t.Errorf("with a source: %v", err)
	}
}

func TestScrubGitHubKeepsTheTokenOutOfErrorsButNotTheirKind(t *testing.T) {
	gh := &provider.GitHubAuth{Token: "gho_CANARYscrub"}
	err := scrubGitHub(fmt.Errorf("pull: bad gho_CANARYscrub: %w", provider.ErrInvalid), gh)
	if strings.Contains(err.Error(), gh.Token) || !errors.Is(err, provider.ErrInvalid) {
		t.Errorf("scrubbed: %v (ErrInvalid: %v)", err, errors.Is(err, provider.ErrInvalid))
	}
	for _, u := range err.(interface{ Unwrap() []error }).Unwrap() {
		if strings.Contains(u.Error(), gh.Token) {
			t.Errorf("unwrapping leads to the token: %v", u)
		}
	}
	if e := errors.New("plain"); scrubGitHub(e, gh) != e || scrubGitHub(nil, gh) != nil {
		t.Error("an error without the token is changed")
	}
}
