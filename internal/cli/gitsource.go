package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strings"
)

// repoState is what `submit --git DIR` reads from a working tree.
type repoState struct {
	// Remote is the remote's name; URL its https form, without
	// credentials.
	Remote string
	URL    string
	Commit string
	// Dirty lists changed or untracked paths (the first few).
	Dirty []string
	// Pushed is false when no remote-tracking branch this clone knows
	// of contains the commit: the VM may be unable to fetch it.
	Pushed bool
}

// maxDirtyShown caps the changed paths an error lists.
const maxDirtyShown = 5

// readRepo reads the working tree at dir with the git command: the remote
// of the current branch (else origin, else the only remote), HEAD's
// commit and the changes git status reports.
func readRepo(ctx context.Context, dir string) (*repoState, error) {
	git := func(args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
		cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0", "LC_ALL=C")
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				return "", fmt.Errorf("git %s: %s", args[0], strings.TrimSpace(stderr.String()))
			}
			return "", fmt.Errorf("git %s: %w", args[0], err)
		}
		return strings.TrimRight(string(out), "\n"), nil
	}
	if _, err := git("rev-parse", "--is-inside-work-tree"); err != nil {
		return nil, fmt.Errorf("submit --git %s: not a git working tree (%v)", dir, err)
	}
	commit, err := git("rev-parse", "--verify", "-q", "HEAD^{commit}")
	if err != nil || commit == "" {
		return nil, fmt.Errorf("submit --git %s: the repository has no commit yet", dir)
	}
	remote := ""
	if branch, err := git("symbolic-ref", "-q", "--short", "HEAD"); err == nil && branch != "" {
		remote, _ = git("config", "--get", "branch."+branch+".remote")
	}
	if remote == "" || remote == "." {
		remotes, err := git("remote")
		if err != nil {
			return nil, fmt.Errorf("submit --git %s: %w", dir, err)
		}
		names := strings.Fields(remotes)
		switch {
		case len(names) == 0:
			return nil, fmt.Errorf("submit --git %s: the repository has no remote for the VM to clone from; add one (git remote add origin https://github.com/OWNER/REPO) and push", dir)
		case len(names) == 1:
			remote = names[0]
		default:
			remote = "origin"
			if !slices.Contains(names, "origin") {
				return nil, fmt.Errorf("submit --git %s: the current branch has no upstream and there is no remote named origin; set one with git branch --set-upstream-to", dir)
			}
		}
	}
	raw, err := git("remote", "get-url", remote)
	if err != nil {
		return nil, fmt.Errorf("submit --git %s: %w", dir, err)
	}
	httpsURL, err := httpsRemote(raw)
	if err != nil {
		return nil, fmt.Errorf("submit --git %s: remote %s: %w", dir, remote, err)
	}
	st := &repoState{Remote: remote, URL: httpsURL, Commit: commit}
	status, err := git("status", "--porcelain=v1", "--untracked-files=normal")
	if err != nil {
		return nil, fmt.Errorf("submit --git %s: %w", dir, err)
	}
	for _, line := range strings.Split(status, "\n") {
		if len(line) > 3 {
			st.Dirty = append(st.Dirty, line[3:])
		}
	}
	contains, _ := git("branch", "-r", "--contains", commit)
	st.Pushed = strings.TrimSpace(contains) != ""
	return st, nil
}

// scpLikeRE is git's scp-like syntax: [user@]host:path.
var scpLikeRE = regexp.MustCompile(`^(?:[^@/]+@)?([^:/]+):(.+)$`)

// httpsRemote turns a remote URL into the https URL the VM clones from:
// ssh and scp-like remotes become https on the same host (the token works
// only over https), and credentials are dropped. The error never quotes a
// URL that held credentials.
func httpsRemote(raw string) (string, error) {
	// git's own rule: "://" makes a URL; else a colon before any slash
	// makes scp-like syntax; else it is a path.
	if strings.Contains(raw, "://") {
		u, err := url.Parse(raw)
		if err != nil {
			return "", errors.New("not a URL git or anycloud can read")
		}
		switch u.Scheme {
		case "https", "http":
			u.User = nil
			return u.String(), nil
		case "ssh", "git+ssh", "ssh+git", "git":
			if u.Hostname() == "" {
				return "", errors.New("want a remote with a host")
			}
			return (&url.URL{Scheme: "https", Host: u.Hostname(), Path: "/" + strings.TrimPrefix(u.Path, "/")}).String(), nil
		case "file":
			return "", errors.New("a local path: the VM cannot reach it; push to a hosted repository")
		default:
			return "", fmt.Errorf("unsupported URL scheme %q: want https (or ssh, which anycloud turns into https)", u.Scheme)
		}
	}
	if m := scpLikeRE.FindStringSubmatch(raw); m != nil && !strings.HasPrefix(raw, "/") && !strings.HasPrefix(raw, ".") {
		return (&url.URL{Scheme: "https", Host: m[1], Path: "/" + strings.TrimPrefix(m[2], "/")}).String(), nil
	}
	return "", errors.New("a local path: the VM cannot reach it; push to a hosted repository")
}
