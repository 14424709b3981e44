package controlplane

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/anycloud/anycloud/internal/github"
	"github.com/anycloud/anycloud/provider"
	"github.com/anycloud/anycloud/seal"
)

// githubLogin reads the login `anycloud login` stored in home, afresh at
// each call (the controller calls it at every VM creation, so a login or
// logout between two VMs is picked up as a rotated secret is): nil when
// not logged in.
func githubLogin(home string) func(context.Context) (*provider.GitHubAuth, error) {
	return func(context.Context) (*provider.GitHubAuth, error) {
		if _, err := os.Stat(filepath.Join(home, github.TokenFile)); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		keys, err := seal.Load(home, false)
		if err != nil {
			return nil, err
		}
		l, err := github.Load(home, keys)
		if errors.Is(err, github.ErrNotLoggedIn) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return &provider.GitHubAuth{Token: l.Token, User: l.User, Registries: l.Registries, GitURL: l.WebURL}, nil
	}
}
