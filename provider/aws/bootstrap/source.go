package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Where the GitHub token and the checkouts live on the VM. The token's
// directory must be a tmpfs (Run refuses to write the token elsewhere);
// it holds the token only while a pull or a clone needs it, and the
// credential helper and the registry login beside it.
const (
	DefaultTokenFile  = "/run/anycloud/github-token"
	DefaultSourceRoot = "/var/lib/anycloud/source"
)

// GitHub is the signed-in GitHub token and where it may be sent: the
// registries of Registries (docker login, for a pull of an image there)
// and git over http(s) under GitURL (a credential helper answers for that
// prefix only). Nothing else ever gets it.
type GitHub struct {
	Token string
	// User is the registry login's user name.
	User       string
	Registries []string
	// GitURL is scheme://host[:port] of the GitHub the token is for.
	GitURL string
}

// String never shows the token.
func (g GitHub) String() string {
	return fmt.Sprintf("bootstrap.GitHub{User: %q, Token: redacted}", g.User)
}

// GoString never shows the token.
func (g GitHub) GoString() string { return g.String() }

// Source is a checkout to make on the VM before the workload starts.
type Source struct {
	Git    string // https URL, no credentials
	Commit string // full SHA
	// Path is where the checkout is copied in the container, and its
	// working directory.
	Path string
	// Dir is the checkout on the VM; DefaultSourceRoot/<container> if empty.
	Dir string
}

// ErrUnauthorized is wrapped by Run's error when a registry or git server
// refused for lack of authorisation.
var ErrUnauthorized = errors.New("not authorised")

// writeTokenScript writes the GitHub token to a tmpfs (tmpfs.go).
var writeTokenScript = writeOnTmpfs("the GitHub token")

// pullScript logs in to registry "$2" as "$3" with the token in the file
// "$1" (on standard input: never an argument), pulls image "$4" and logs
// out, with DOCKER_CONFIG in a fresh directory beside the token (tmpfs),
// removed on the way out whatever happened.
const pullScript = `set -eu
umask 077
cfg=$(mktemp -d -- "$(dirname -- "$1")/docker-config.XXXXXX")
export DOCKER_CONFIG="$cfg"
trap 'docker logout "$2" >/dev/null 2>&1 || true; rm -rf -- "$cfg"' EXIT
docker login --username "$3" --password-stdin "$2" < "$1" >/dev/null
docker pull --quiet "$4" >/dev/null`

// cloneScript checks out commit "$3" of repository "$2" into the fresh
// directory "$4". With a token file "$1", git gets the token from a
// credential helper (beside the token, on tmpfs) that answers only for
// URLs under "$5": the token is read from its file when git asks, never
// put in a URL, an argument or the repository's config. The helper is
// run by sh, not executed: /run is often mounted noexec. No prompt, no
// helper of the VM's configuration is used. It fetches just the commit
// and, from a server that refuses a fetch by SHA, everything; then checks
// that HEAD is exactly the commit.
const cloneScript = `set -eu
export GIT_TERMINAL_PROMPT=0 GIT_ASKPASS=/bin/false SSH_ASKPASS=/bin/false GCM_INTERACTIVE=never
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null LC_ALL=C
if ! command -v git >/dev/null 2>&1; then echo "git is not installed on the VM" >&2; exit 1; fi
tok=$1 repo=$2 commit=$3 dir=$4 prefix=$5
set -- -c credential.helper=
if [ -n "$tok" ]; then
  helper=$(dirname -- "$tok")/git-credential-anycloud
  umask 077
  printf '#!/bin/sh\ntest "$1" = get || exit 0\necho username=x-access-token\nprintf password=\nexec cat %s\n' "'$tok'" > "$helper"
  chmod 700 -- "$helper"
  trap 'rm -f -- "$helper"' EXIT
  set -- "$@" -c "credential.$prefix.helper=!sh $helper"
fi
umask 022
rm -rf -- "$dir"
mkdir -p -- "$dir"
cd -- "$dir"
git init -q
git remote add origin "$repo"
if ! git "$@" fetch -q --depth 1 origin "$commit" 2>/dev/null; then
  git "$@" fetch -q origin
fi
git -c advice.detachedHead=false checkout -q --detach "$commit"
test "$(git rev-parse HEAD)" = "$commit" || { echo "checked out $(git rev-parse HEAD), not $commit" >&2; exit 1; }`

// shaRE is a full commit SHA (SHA-1 or SHA-256).
var shaRE = regexp.MustCompile(`^([0-9a-f]{40}|[0-9a-f]{64})$`)

// safePathRE is a VM path the scripts may name: absolute, plain
// characters (it is quoted into the credential helper).
var safePathRE = regexp.MustCompile(`^/[A-Za-z0-9._/-]+$`)

// checkSource checks what Run sends for a checkout; the manifest's
// validation has done so already, this keeps bootstrap safe on its own.
func checkSource(s *Source) error {
	if !shaRE.MatchString(s.Commit) {
		return fmt.Errorf("source: commit %q is not a full SHA", s.Commit)
	}
	u, err := url.Parse(s.Git)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return errors.New("source: want an http(s) repository URL without credentials")
	}
	if !safePathRE.MatchString(s.Dir) || path.Clean(s.Dir) != s.Dir || s.Dir == "/" {
		return fmt.Errorf("source: invalid checkout directory %q", s.Dir)
	}
	if !strings.HasPrefix(s.Path, "/") || path.Clean(s.Path) != s.Path || s.Path == "/" || strings.ContainsAny(s.Path, ",:\\\n") {
		return fmt.Errorf("source: invalid mount path %q", s.Path)
	}
	return nil
}

// forGit reports whether repo lies under the token's GitHub: same scheme,
// host and port. Anything else is cloned without the token.
func (g *GitHub) forGit(repo string) bool {
	if g == nil || g.GitURL == "" {
		return false
	}
	r, err1 := url.Parse(repo)
	base, err2 := url.Parse(g.GitURL)
	return err1 == nil && err2 == nil && r.Scheme == base.Scheme && strings.EqualFold(r.Host, base.Host)
}

// gitPrefix is the URL prefix the credential helper answers for.
func (g *GitHub) gitPrefix() string {
	base, _ := url.Parse(g.GitURL)
	return base.Scheme + "://" + base.Host
}

// forImage returns the registry of image when the token is for it.
func (g *GitHub) forImage(image string) (string, bool) {
	if g == nil {
		return "", false
	}
	host := registryHost(image)
	return host, slices.Contains(g.Registries, host)
}

// registryHost is the registry part of an image reference, as docker
// reads it.
func registryHost(image string) string {
	first, rest, ok := strings.Cut(image, "/")
	if !ok || rest == "" {
		return "docker.io"
	}
	if strings.ContainsAny(first, ".:") || first == "localhost" {
		return strings.ToLower(first)
	}
	return "docker.io"
}

// prepare does what must happen before w's container starts: with a
// token for the image's registry, logs in, pulls and logs out; with a
// source, checks it out. The token goes over the session's standard input
// into w's token file on tmpfs, and is removed from there once used.
// Errors never hold the token.
func prepare(ctx context.Context, client *ssh.Client, root bool, w *Workload) (err error) {
	registry, pull := w.GitHub.forImage(w.Image)
	cloneWithToken := w.Source != nil && w.GitHub.forGit(w.Source.Git)
	tokenFile := ""
	if pull || cloneWithToken {
		tokenFile = w.TokenFile
		if tokenFile == "" {
			tokenFile = DefaultTokenFile
		}
		if !safePathRE.MatchString(tokenFile) {
			return fmt.Errorf("invalid token file %q", tokenFile)
		}
		defer func() {
			// Whatever happened, the token leaves the VM's tmpfs.
			_, rmErr := command(context.WithoutCancel(ctx), client, root, nil, "rm", "-f", "--", tokenFile)
			if rmErr != nil && err == nil {
				err = fmt.Errorf("remove the token from the VM: %w", rmErr)
			}
			if err != nil {
				err = redactError(err, w.GitHub.Token)
			}
		}()
		if _, err := command(ctx, client, root, []byte(w.GitHub.Token+"\n"), "sh", "-c", writeTokenScript, "sh", tokenFile); err != nil {
			return fmt.Errorf("write the GitHub token to %s: %w", tokenFile, err)
		}
	}
	if pull {
		user := w.GitHub.User
		if user == "" {
			user = "x-access-token"
		}
		if _, err := command(ctx, client, root, nil, "sh", "-c", pullScript, "sh", tokenFile, registry, user, w.Image); err != nil {
			return pullError(w.Image, err, true)
		}
	}
	if w.Source != nil {
		tok, prefix := "", ""
		if cloneWithToken {
			tok, prefix = tokenFile, w.GitHub.gitPrefix()
		}
		if _, err := command(ctx, client, root, nil, "sh", "-c", cloneScript, "sh", tok, w.Source.Git, w.Source.Commit, w.Source.Dir, prefix); err != nil {
			return cloneError(w.Source, err, cloneWithToken)
		}
	}
	return nil
}

// startWithSource starts w with its checkout in place: docker create,
// docker cp of the checkout to w.Source.Path, docker start. The copy
// travels from the VM's docker client to the engine, so it works the same
// whether the engine is the VM's own or (in the cloud emulator) shared,
// which a bind mount of a VM path would not.
func startWithSource(ctx context.Context, client *ssh.Client, root bool, w Workload, file string) error {
	args := runArgs(w, file)
	create := append([]string{"docker", "create"}, args[3:]...) // drop "docker run -d"
	if _, err := command(ctx, client, root, nil, create...); err != nil {
		return fmt.Errorf("run workload %s: docker create: %w", w.Name, runError(w.Image, err))
	}
	if _, err := command(ctx, client, root, nil, "docker", "cp", w.Source.Dir+"/.", w.Name+":"+w.Source.Path); err != nil {
		return fmt.Errorf("run workload %s: copy the checkout to %s: %w", w.Name, w.Source.Path, err)
	}
	if _, err := command(ctx, client, root, nil, "docker", "start", w.Name); err != nil {
		return fmt.Errorf("run workload %s: docker start: %w", w.Name, err)
	}
	return nil
}

// runError explains a failed docker run or create, whose pull of a
// missing image may have been refused.
func runError(image string, err error) error {
	msg := strings.ToLower(err.Error())
	for _, m := range []string{"pull access denied", "unauthorized", "no basic auth credentials", "authentication required", "requested access to the resource is denied"} {
		if strings.Contains(msg, m) {
			return pullError(image, err, false)
		}
	}
	return err
}

// unauthorizedMarks are what docker and git print when a registry or a
// server wants credentials it did not get or refused.
var unauthorizedMarks = []string{
	"unauthorized", "authentication required", "no basic auth credentials", "pull access denied",
	"requested access to the resource is denied", "returned error: 401", "returned error: 403", "authentication failed",
	"could not read username", "terminal prompts disabled", "invalid username or password",
}

func isUnauthorized(err error) bool {
	msg := strings.ToLower(err.Error())
	for _, m := range unauthorizedMarks {
		if strings.Contains(msg, m) {
			return true
		}
	}
	return false
}

// pullError explains a failed pull: for lack of authorisation, it says so
// and what to do.
func pullError(image string, err error, withToken bool) error {
	if !isUnauthorized(err) {
		return fmt.Errorf("pull %s: %w", image, err)
	}
	if withToken {
		return fmt.Errorf("pull %s: %w: the registry refused the GitHub token; run `anycloud login` with a token that can read this package (scope read:packages), then `anycloud resubmit`: %v", image, ErrUnauthorized, err)
	}
	return fmt.Errorf("pull %s: %w: the registry wants credentials; for an image on GitHub's registry run `anycloud login`, then `anycloud resubmit`: %v", image, ErrUnauthorized, err)
}

// cloneError explains a failed checkout.
func cloneError(s *Source, err error, withToken bool) error {
	if !isUnauthorized(err) {
		return fmt.Errorf("check out %s at %s: %w", s.Git, s.Commit, err)
	}
	if withToken {
		return fmt.Errorf("check out %s at %s: %w: the server refused the GitHub token; run `anycloud login` with a token that can read the repository (scope repo), then `anycloud resubmit`: %v", s.Git, s.Commit, ErrUnauthorized, err)
	}
	return fmt.Errorf("check out %s at %s: %w: the repository wants credentials; run `anycloud login` (to the GitHub that hosts it), then `anycloud resubmit`: %v", s.Git, s.Commit, ErrUnauthorized, err)
}

// redactError replaces token in err's text, keeping what it wraps.
func redactError(err error, token string) error {
	if token == "" || !strings.Contains(err.Error(), token) {
		return err
	}
	return &redacted{msg: strings.ReplaceAll(err.Error(), token, "[redacted]"), err: err}
}

// redacted keeps only the sentinels of the error it replaces: unwrapping
// must not lead back to the text that held the token.
type redacted struct {
	msg string
	err error
}

func (r *redacted) Error() string { return r.msg }

func (r *redacted) Unwrap() []error {
	var out []error
	for _, s := range []error{ErrUnauthorized, ErrInvalidEnv, context.Canceled, context.DeadlineExceeded} {
		if errors.Is(r.err, s) {
			out = append(out, s)
		}
	}
	return out
}
