package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/anycloud/anycloud/internal/github"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

// Environment variables that choose the GitHub to sign in to, as the
// flags of the same meaning do.
const (
	envGitHubURL      = "ANYCLOUD_GITHUB_URL"
	envGitHubAPIURL   = "ANYCLOUD_GITHUB_API_URL"
	envGitHubClientID = "ANYCLOUD_GITHUB_CLIENT_ID"
)

// LoginOptions are the options of `anycloud login`.
type LoginOptions struct {
	f         *Factory
	URL       string
	APIURL    string
	ClientID  string
	WithToken bool
	Scopes    []string
	// Registries are the container registries the token is sent to;
	// ghcr.io for github.com when none is named.
	Registries []string

	// sleep and now pace the device flow; tests replace them.
	sleep func(context.Context, time.Duration) error
	now   func() time.Time
}

// NewCmdLogin builds `anycloud login`.
func NewCmdLogin(f *Factory, runF func(*LoginOptions) error) *cobra.Command {
	o := &LoginOptions{f: f}
	cmd := &cobra.Command{
		Use:   "login [--with-token] [--github-url URL] [--github-api-url URL] [--client-id ID] [--registry HOST]...",
		Short: "Sign in to GitHub, for private images and code sync",
		Long: `Sign in to GitHub through its OAuth device flow: anycloud prints a one-time
code and a URL; open the URL, enter the code and approve. With --with-token,
the token is read from standard input instead (for CI, as
` + "`gh auth login --with-token`" + `).

The token is checked against the API, then kept sealed with the control
plane's cipher key in $ANYCLOUD_HOME/.token (mode 0600). VMs use it to pull
images from the registries named with --registry (ghcr.io for github.com)
and to clone repositories under the GitHub URL for spec.source; it is never
sent anywhere else.`,
		Example: `  anycloud login
  echo "$GH_TOKEN" | anycloud login --with-token
  anycloud login --github-url https://ghe.example.com --github-api-url https://ghe.example.com/api/v3 \
      --client-id Iv1.0123456789abcdef --registry containers.ghe.example.com`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVar(&o.URL, "github-url", "", "GitHub web URL (env "+envGitHubURL+", default "+github.DefaultWebURL+")")
	cmd.Flags().StringVar(&o.APIURL, "github-api-url", "", "GitHub API URL (env "+envGitHubAPIURL+", default "+github.DefaultAPIURL+")")
	cmd.Flags().StringVar(&o.ClientID, "client-id", "", "OAuth app client id for the device flow (env "+envGitHubClientID+", default anycloud's app on github.com)")
	cmd.Flags().BoolVar(&o.WithToken, "with-token", false, "read a token from standard input instead of the device flow")
	cmd.Flags().StringSliceVar(&o.Scopes, "scopes", github.DefaultScopes, "OAuth scopes to ask for in the device flow")
	cmd.Flags().StringArrayVar(&o.Registries, "registry", nil, "container registry host the token is for (repeatable; default ghcr.io for github.com)")
	return cmd
}

// registryRE is a registry host as an image reference starts: host[:port].
var registryRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$`)

// Validate checks the options alone.
func (o *LoginOptions) Validate() error {
	for i, r := range o.Registries {
		r = strings.ToLower(r)
		if !registryRE.MatchString(r) {
			return usageErrorf("login --registry: want a registry host such as ghcr.io or host:5000, got %q", r)
		}
		o.Registries[i] = r
	}
	if o.WithToken && o.f.IO.In == nil {
		return usageErrorf("login --with-token: no standard input")
	}
	return nil
}

// githubURLs resolves the web and API URLs and the client id: flag, then
// environment, then the defaults for github.com. An API URL left unset
// for a web URL that is not github.com is that host's /api/v3, as GitHub
// Enterprise Server serves it.
func githubURLs(f *Factory, webURL, apiURL, clientID string) (string, string, string) {
	pick := func(flag, env string) string {
		if flag != "" {
			return flag
		}
		return f.IO.Getenv(env)
	}
	webURL, apiURL, clientID = pick(webURL, envGitHubURL), pick(apiURL, envGitHubAPIURL), pick(clientID, envGitHubClientID)
	if webURL == "" {
		webURL = github.DefaultWebURL
	}
	if apiURL == "" {
		if strings.TrimRight(webURL, "/") == github.DefaultWebURL {
			apiURL = github.DefaultAPIURL
		} else {
			apiURL = strings.TrimRight(webURL, "/") + "/api/v3"
		}
	}
	return webURL, apiURL, clientID
}

// loginKeys loads the cipher key for the login. A new key is made only in
// a home without a store: a missing key beside a store is the store's
// hard error, never papered over with a new key.
func loginKeys(home string) (*seal.Keyring, error) {
	_, err := os.Stat(filepath.Join(home, state.DBFile))
	return seal.Load(home, errors.Is(err, fs.ErrNotExist))
}

// Run signs in and stores the login.
func (o *LoginOptions) Run(ctx context.Context) error {
	home, err := o.f.HomeDir()
	if err != nil {
		return err
	}
	webURL, apiURL, clientID := githubURLs(o.f, o.URL, o.APIURL, o.ClientID)
	gh, err := github.NewClient(webURL, apiURL, clientID)
	if err != nil {
		return usageErrorf("login: %v", err)
	}
	gh.Sleep, gh.Now = o.sleep, o.now
	// Load the key first: a home whose key is missing fails before the
	// person goes through the device flow for nothing.
	keys, err := loginKeys(home)
	if err != nil {
		return err
	}
	var token string
	if o.WithToken {
		b, err := io.ReadAll(io.LimitReader(o.f.IO.In, 64<<10))
		if err != nil {
			return fmt.Errorf("login --with-token: read standard input: %w", err)
		}
		token = strings.TrimSpace(string(b))
		clear(b)
		if token == "" || strings.ContainsAny(token, " \t\r\n") {
			return usageErrorf("login --with-token: want one token on standard input")
		}
	} else {
		dc, err := gh.RequestDeviceCode(ctx, o.Scopes)
		if err != nil {
			return fmt.Errorf("login: %w", err)
		}
		w := o.f.IO.ErrOut
		fmt.Fprintf(w, "First copy your one-time code: %s\n", dc.UserCode)
		fmt.Fprintf(w, "Then open %s in a browser, enter the code and approve anycloud.\n", dc.VerificationURI)
		fmt.Fprintf(w, "Waiting for approval (the code expires at %s)...\n", dc.Expires.Local().Format("15:04:05"))
		tok, err := gh.PollToken(ctx, dc)
		switch {
		case errors.Is(err, github.ErrAccessDenied):
			return fmt.Errorf("login: %w; run `anycloud login` to try again", err)
		case errors.Is(err, github.ErrExpired):
			return fmt.Errorf("login: %w; run `anycloud login` for a new code", err)
		case err != nil:
			return fmt.Errorf("login: %w", err)
		}
		token = tok.AccessToken
	}
	user, err := gh.User(ctx, token)
	if errors.Is(err, github.ErrUnauthorized) {
		return fmt.Errorf("login: %s does not accept the token (HTTP 401): it is revoked, expired or mistyped", hostOf(apiURL))
	}
	if err != nil {
		return fmt.Errorf("login: check the token: %w", err)
	}
	registries := o.Registries
	if len(registries) == 0 && gh.WebURL == github.DefaultWebURL {
		registries = github.DefaultRegistries
	}
	l := &github.Login{
		Token: token, User: user.Login, WebURL: gh.WebURL, APIURL: gh.APIURL,
		Registries: registries, Scopes: user.Scopes, CreatedAt: time.Now().UTC(),
	}
	if err := github.Save(home, keys, l); err != nil {
		return err
	}
	fmt.Fprintf(o.f.IO.Out, "Logged in to %s as %s\n", hostOf(gh.WebURL), user.Login)
	printScopes(o.f.IO.Out, user)
	if len(registries) > 0 {
		fmt.Fprintf(o.f.IO.Out, "  registries: %s\n", strings.Join(registries, ", "))
	}
	fmt.Fprintf(o.f.IO.Out, "  token: sealed in %s\n", filepath.Join(home, github.TokenFile))
	return nil
}

// printScopes prints the token's scopes and warns about missing ones.
func printScopes(w io.Writer, u *github.User) {
	if !u.ScopesKnown {
		fmt.Fprintf(w, "  token scopes: not reported (a fine-grained token: give it Contents read and Packages read)\n")
		return
	}
	fmt.Fprintf(w, "  token scopes: %s\n", orNone(strings.Join(u.Scopes, ", ")))
	if missing := github.MissingScopes(u.Scopes, github.DefaultScopes); len(missing) > 0 {
		fmt.Fprintf(w, "  warning: the token lacks %s: private repositories (repo) or images (read:packages) will not be reachable\n", strings.Join(missing, ", "))
	}
}

// hostOf is the host of a URL, for messages.
func hostOf(u string) string {
	if p, err := url.Parse(u); err == nil && p.Host != "" {
		return p.Host
	}
	return u
}

// LogoutOptions are the options of `anycloud logout`.
type LogoutOptions struct {
	f *Factory
}

// NewCmdLogout builds `anycloud logout`.
func NewCmdLogout(f *Factory, runF func(*LogoutOptions) error) *cobra.Command {
	o := &LogoutOptions{f: f}
	return &cobra.Command{
		Use:   "logout",
		Short: "Forget the GitHub token",
		Long: `Remove the stored GitHub login ($ANYCLOUD_HOME/.token). VMs created from now
on get no token; running VMs keep what they were given. The token itself
stays valid on GitHub until you revoke it there (Settings, Applications).`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
}

// Run removes the login.
func (o *LogoutOptions) Run(ctx context.Context) error {
	home, err := o.f.HomeDir()
	if err != nil {
		return err
	}
	who := ""
	if keys, err := seal.Load(home, false); err == nil {
		if l, err := github.Load(home, keys); err == nil {
			who = fmt.Sprintf(" %s as %s", hostOf(l.WebURL), l.User)
		}
	}
	had, err := github.Remove(home)
	if err != nil {
		return err
	}
	if !had {
		fmt.Fprintln(o.f.IO.Out, "not logged in to GitHub")
		return nil
	}
	fmt.Fprintf(o.f.IO.Out, "Logged out%s: removed %s\n", who, filepath.Join(home, github.TokenFile))
	return nil
}

// NewCmdAuth builds `anycloud auth` and its verbs.
func NewCmdAuth(f *Factory) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "auth",
		Short: "The GitHub sign-in",
		Args:  exactArgs(0, "a verb: status"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return usageErrorf("auth: want a verb: status\nsee 'anycloud auth --help'")
		},
	}
	cmd.AddCommand(NewCmdAuthStatus(f, nil))
	return cmd
}

// AuthStatusOptions are the options of `anycloud auth status`.
type AuthStatusOptions struct {
	f      *Factory
	Output string
}

// NewCmdAuthStatus builds `anycloud auth status`.
func NewCmdAuthStatus(f *Factory, runF func(*AuthStatusOptions) error) *cobra.Command {
	o := &AuthStatusOptions{f: f}
	cmd := &cobra.Command{
		Use:   "status [-o json]",
		Short: "Show the GitHub login and the token's scopes, as the API reports them",
		Long: `Ask the GitHub API who the stored token belongs to and which scopes it has
(GET /user and its X-OAuth-Scopes header). The token is never shown. Exit
status 1 when not logged in or when GitHub no longer accepts the token.`,
		Args: exactArgs(0, "no arguments"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := o.Validate(); err != nil {
				return err
			}
			if runF != nil {
				return runF(o)
			}
			return o.Run(cmd.Context())
		},
	}
	cmd.Flags().StringVarP(&o.Output, "output", "o", "", "output format: json")
	return cmd
}

// Validate checks the options alone.
func (o *AuthStatusOptions) Validate() error {
	if o.Output != "" && o.Output != "json" {
		return usageErrorf("auth status -o: want json, got %q", o.Output)
	}
	return nil
}

// authStatus is `auth status -o json`: never the token.
type authStatus struct {
	Host        string   `json:"host"`
	User        string   `json:"user"`
	Scopes      []string `json:"scopes"`
	ScopesKnown bool     `json:"scopesKnown"`
	Registries  []string `json:"registries"`
	TokenFile   string   `json:"tokenFile"`
}

// Run shows the login.
func (o *AuthStatusOptions) Run(ctx context.Context) error {
	home, err := o.f.HomeDir()
	if err != nil {
		return err
	}
	path := filepath.Join(home, github.TokenFile)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return github.ErrNotLoggedIn
	}
	keys, err := seal.Load(home, false)
	if err != nil {
		return err
	}
	l, err := github.Load(home, keys)
	if err != nil {
		return err
	}
	gh, err := github.NewClient(l.WebURL, l.APIURL, "")
	if err != nil {
		return err
	}
	user, err := gh.User(ctx, l.Token)
	if errors.Is(err, github.ErrUnauthorized) {
		return fmt.Errorf("%s: the stored token for %s is no longer accepted (HTTP 401); run `anycloud login`", hostOf(l.WebURL), l.User)
	}
	if err != nil {
		return fmt.Errorf("auth status: %w", err)
	}
	if o.Output == "json" {
		b, _ := json.MarshalIndent(authStatus{
			Host: hostOf(l.WebURL), User: user.Login, Scopes: user.Scopes, ScopesKnown: user.ScopesKnown,
			Registries: l.Registries, TokenFile: path,
		}, "", "  ")
		fmt.Fprintf(o.f.IO.Out, "%s\n", b)
		return nil
	}
	w := o.f.IO.Out
	fmt.Fprintf(w, "%s\n", hostOf(l.WebURL))
	fmt.Fprintf(w, "  logged in as %s\n", user.Login)
	printScopes(w, user)
	fmt.Fprintf(w, "  registries: %s\n", orNone(strings.Join(l.Registries, ", ")))
	fmt.Fprintf(w, "  api: %s\n", l.APIURL)
	fmt.Fprintf(w, "  token: sealed in %s\n", path)
	return nil
}

// heldLogin is the GitHub login, opened under the old key and held in
// memory while `keys rotate` replaces the key, so that it can be sealed
// again under the new one: the login lives in .token, outside the store
// that the rotation re-seals.
type heldLogin struct {
	home  string
	login *github.Login
}

// holdLogin opens the login, if there is one that opens; nil otherwise.
func holdLogin(f *Factory) *heldLogin {
	home, err := f.HomeDir()
	if err != nil {
		return nil
	}
	if _, err := os.Stat(filepath.Join(home, github.TokenFile)); err != nil {
		return nil
	}
	keys, err := seal.Load(home, false)
	if err != nil {
		return nil
	}
	l, err := github.Load(home, keys)
	if err != nil {
		return nil
	}
	return &heldLogin{home: home, login: l}
}

// reseal seals the held login under the key now in place. Failing, it
// says so: the login is then lost, and a new `anycloud login` replaces it.
func (h *heldLogin) reseal(f *Factory) {
	if h == nil {
		return
	}
	keys, err := seal.Load(h.home, false)
	if err == nil {
		err = github.Save(h.home, keys, h.login)
	}
	if err != nil {
		fmt.Fprintf(f.IO.ErrOut, "warning: the GitHub login could not be sealed under the new key (%v); run `anycloud login` again\n", err)
		return
	}
	fmt.Fprintln(f.IO.ErrOut, "The GitHub login is sealed under the new key too.")
}
