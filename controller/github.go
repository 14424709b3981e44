package controller

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
)

// withGitHub adds to req what the GitHub login gives a VM creation: the
// token, read now (so that `anycloud login` between two VMs is picked up
// as a rotated secret is), the deployment's source, and GITHUB_TOKEN in
// the workload's env when the source exposes it and neither env nor a
// bundle sets that key. The token is never stored: not in the
// deployment, its status or an event.
func (c *Controller) withGitHub(ctx context.Context, d *manifests.Deployment, req *provider.LaunchRequest) error {
	if src := d.Spec.Source; src != nil {
		req.Source = &provider.Source{Git: src.Git, Commit: src.Commit, Path: src.Path}
		if req.Source.Path == "" {
			req.Source.Path = manifests.DefaultSourcePath
		}
	}
	if c.github == nil {
		return nil
	}
	gh, err := c.github(ctx)
	if err != nil && d.Spec.Source != nil {
		return fmt.Errorf("read the GitHub login: %w", err)
	}
	if err != nil {
		// Only a private image needs it; its pull will say to log in.
		logr.FromContextOrDiscard(ctx).Info("GitHub login unreadable; going on without it", "error", err.Error())
		gh = nil
	}
	req.GitHub = gh
	if gh == nil || d.Spec.Source == nil || !d.Spec.Source.TokenExposed() {
		return nil
	}
	if _, set := req.Env["GITHUB_TOKEN"]; !set {
		if req.Env == nil {
			req.Env = map[string]string{}
		}
		req.Env["GITHUB_TOKEN"] = gh.Token
	}
	return nil
}

// scrubGitHub keeps the token out of an error that conditions, events and
// logs will show, in case a provider's error quotes it.
func scrubGitHub(err error, gh *provider.GitHubAuth) error {
	if err == nil || gh == nil || gh.Token == "" || !strings.Contains(err.Error(), gh.Token) {
		return err
	}
	return &scrubbed{msg: strings.ReplaceAll(err.Error(), gh.Token, "[redacted]"), err: err}
}

// scrubbed unwraps only to the provider's sentinels, never back to the
// text that held the token.
type scrubbed struct {
	msg string
	err error
}

func (s *scrubbed) Error() string { return s.msg }

func (s *scrubbed) Unwrap() []error {
	var out []error
	for _, e := range []error{provider.ErrInvalid, provider.ErrNotFound, provider.ErrThrottled, provider.ErrCapacity, provider.ErrUnavailable, provider.ErrAttemptSpent, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(s.err, e) {
			out = append(out, e)
		}
	}
	return out
}
