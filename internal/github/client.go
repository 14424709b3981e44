package github

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Defaults for github.com.
const (
	DefaultWebURL = "https://github.com"
	DefaultAPIURL = "https://api.github.com"
	// DefaultClientID is anycloud's OAuth app on github.com, with the
	// device flow enabled. A GitHub Enterprise server needs an app of its
	// own: pass its id with --client-id or ANYCLOUD_GITHUB_CLIENT_ID.
	DefaultClientID = "Ov23liAnycloudCLI0001"
)

// DefaultScopes are what anycloud asks for: repo, to clone private
// repositories on the VM, and read:packages, to pull private images from
// GitHub's container registry.
var DefaultScopes = []string{"repo", "read:packages"}

// DefaultRegistries are the container registries a github.com token is
// sent to.
var DefaultRegistries = []string{"ghcr.io"}

// Sentinel errors.
var (
	// ErrAccessDenied: the person declined the authorisation request.
	ErrAccessDenied = errors.New("access denied: the authorisation request was declined")
	// ErrExpired: the device code expired before it was entered.
	ErrExpired = errors.New("the device code expired before it was entered")
	// ErrUnauthorized: GitHub does not accept the token (revoked, expired
	// or mistyped).
	ErrUnauthorized = errors.New("GitHub does not accept the token")
	// ErrDeviceFlowDisabled: the OAuth app does not allow the device flow.
	ErrDeviceFlowDisabled = errors.New("the OAuth app does not have the device flow enabled")
	// ErrUnknownClient: GitHub knows no OAuth app with this client id.
	ErrUnknownClient = errors.New("GitHub knows no OAuth app with this client id")
)

// Client talks to one GitHub, web and API. The zero value is not usable:
// fill in at least the URLs and ClientID (NewClient does).
type Client struct {
	WebURL   string
	APIURL   string
	ClientID string
	HTTP     *http.Client
	// Sleep waits d unless ctx ends first; tests make it return at once
	// and advance Now. time-based when nil.
	Sleep func(ctx context.Context, d time.Duration) error
	// Now is the clock that decides expiry; time.Now when nil.
	Now func() time.Time
}

// NewClient returns a client of the GitHub at webURL and apiURL (the
// defaults when empty) for the OAuth app clientID (DefaultClientID when
// empty).
func NewClient(webURL, apiURL, clientID string) (*Client, error) {
	c := &Client{WebURL: webURL, APIURL: apiURL, ClientID: clientID, HTTP: &http.Client{Timeout: 30 * time.Second}}
	if c.WebURL == "" {
		c.WebURL = DefaultWebURL
	}
	if c.APIURL == "" {
		c.APIURL = DefaultAPIURL
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	var err error
	if c.WebURL, err = CleanURL(c.WebURL); err != nil {
		return nil, fmt.Errorf("GitHub URL: %w", err)
	}
	if c.APIURL, err = CleanURL(c.APIURL); err != nil {
		return nil, fmt.Errorf("GitHub API URL: %w", err)
	}
	return c, nil
}

// CleanURL checks that u is an http(s) URL without credentials, query or
// fragment, and returns it without a trailing slash.
func CleanURL(u string) (string, error) {
	p, err := url.Parse(u)
	if err != nil {
		return "", fmt.Errorf("%q is not a URL", u)
	}
	switch {
	case p.Scheme != "https" && p.Scheme != "http":
		return "", fmt.Errorf("%q: want an https:// URL", u)
	case p.Host == "":
		return "", fmt.Errorf("%q: no host", u)
	case p.User != nil:
		// Never echo it: the user part may hold a token.
		return "", errors.New("the URL holds credentials; remove them")
	case p.RawQuery != "" || p.Fragment != "":
		return "", fmt.Errorf("%q: want no query or fragment", u)
	}
	return strings.TrimRight(p.String(), "/"), nil
}

func (c *Client) now() time.Time {
	if c.Now != nil {
		return c.Now()
	}
	return time.Now()
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if c.Sleep != nil {
		return c.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-t.C:
		return nil
	}
}

// DeviceCode is GitHub's answer to the start of a device flow. The device
// code itself is only for polling; show UserCode and VerificationURI.
type DeviceCode struct {
	deviceCode      string
	UserCode        string
	VerificationURI string
	// Interval is how long to wait between polls, as GitHub says.
	Interval time.Duration
	// Expires is when the code stops working.
	Expires time.Time
}

// Token is an OAuth access token. It prints as redacted.
type Token struct {
	AccessToken string
	TokenType   string
	// Scopes are those GitHub granted (the person may grant fewer than
	// asked for).
	Scopes []string
}

// String never shows the token.
func (t Token) String() string { return "github.Token{redacted}" }

// GoString never shows the token.
func (t Token) GoString() string { return t.String() }

// defaultInterval is the poll interval when GitHub names none; slowDown is
// what every slow_down adds (RFC 8628, section 3.5).
const (
	defaultInterval = 5 * time.Second
	slowDown        = 5 * time.Second
)

// RequestDeviceCode starts the device flow for scopes.
func (c *Client) RequestDeviceCode(ctx context.Context, scopes []string) (*DeviceCode, error) {
	var resp struct {
		DeviceCode      string `json:"device_code"`
		UserCode        string `json:"user_code"`
		VerificationURI string `json:"verification_uri"`
		ExpiresIn       int    `json:"expires_in"`
		Interval        int    `json:"interval"`
		oauthError
	}
	form := url.Values{"client_id": {c.ClientID}, "scope": {strings.Join(scopes, " ")}}
	if err := c.postForm(ctx, "/login/device/code", form, &resp); err != nil {
		return nil, err
	}
	if resp.Error != "" {
		return nil, resp.err("start the device flow")
	}
	if resp.DeviceCode == "" || resp.UserCode == "" || resp.VerificationURI == "" {
		return nil, fmt.Errorf("start the device flow at %s: the answer lacks a device code, user code or verification URI", c.WebURL)
	}
	dc := &DeviceCode{
		deviceCode: resp.DeviceCode, UserCode: resp.UserCode, VerificationURI: resp.VerificationURI,
		Interval: time.Duration(resp.Interval) * time.Second,
		Expires:  c.now().Add(time.Duration(resp.ExpiresIn) * time.Second),
	}
	if dc.Interval <= 0 {
		dc.Interval = defaultInterval
	}
	if resp.ExpiresIn <= 0 {
		dc.Expires = c.now().Add(15 * time.Minute) // GitHub's own lifetime
	}
	return dc, nil
}

// PollToken waits for the person to enter dc's user code: it polls every
// dc.Interval, adds five seconds to the interval at every slow_down (or
// takes the interval GitHub names, if longer), and returns the token once
// granted. It ends with ErrAccessDenied when the person declines and with
// ErrExpired when the code expires, whether GitHub says so or the clock
// passes dc.Expires first.
func (c *Client) PollToken(ctx context.Context, dc *DeviceCode) (*Token, error) {
	interval := dc.Interval
	for {
		if !c.now().Add(interval).Before(dc.Expires) {
			return nil, ErrExpired
		}
		if err := c.sleep(ctx, interval); err != nil {
			return nil, err
		}
		var resp struct {
			AccessToken string `json:"access_token"`
			TokenType   string `json:"token_type"`
			Scope       string `json:"scope"`
			Interval    int    `json:"interval"`
			oauthError
		}
		form := url.Values{
			"client_id":   {c.ClientID},
			"device_code": {dc.deviceCode},
			"grant_type":  {"urn:ietf:params:oauth:grant-type:device_code"},
		}
		if err := c.postForm(ctx, "/login/oauth/access_token", form, &resp); err != nil {
			return nil, err
		}
		switch resp.Error {
		case "":
			if resp.AccessToken == "" {
				return nil, fmt.Errorf("poll for the token at %s: the answer has neither a token nor an error", c.WebURL)
			}
			return &Token{AccessToken: resp.AccessToken, TokenType: resp.TokenType, Scopes: splitScopes(resp.Scope, ",")}, nil
		case "authorization_pending":
		case "slow_down":
			interval += slowDown
			if named := time.Duration(resp.Interval) * time.Second; named > interval {
				interval = named
			}
		default:
			return nil, resp.err("poll for the token")
		}
	}
}

// oauthError is the error part of GitHub's OAuth answers, which come with
// status 200.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

func (e *oauthError) err(what string) error {
	var sentinel error
	switch e.Error {
	case "access_denied":
		sentinel = ErrAccessDenied
	case "expired_token":
		sentinel = ErrExpired
	case "device_flow_disabled":
		sentinel = ErrDeviceFlowDisabled
	case "incorrect_client_credentials", "unauthorized_client":
		sentinel = ErrUnknownClient
	}
	if sentinel != nil {
		return fmt.Errorf("%s: %w", what, sentinel)
	}
	msg := e.Error
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return fmt.Errorf("%s: GitHub answered %s", what, msg)
}

// postForm posts form to path on the web host and decodes the JSON answer
// into out.
func (c *Client) postForm(ctx context.Context, path string, form url.Values, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.WebURL+path, strings.NewReader(form.Encode()))
	if err != nil {
		return fmt.Errorf("POST %s: %w", path, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	return c.do(req, path, out)
}

// do sends req and decodes a JSON answer into out. OAuth errors come as
// JSON with status 200 or 400; anything else that is not JSON is an error
// naming the status, so that a wrong host says so.
func (c *Client) do(req *http.Request, what string, out any) error {
	res, err := c.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", req.Method, what, redactURLError(err))
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read the answer: %w", req.Method, what, err)
	}
	mt, _, _ := mime.ParseMediaType(res.Header.Get("Content-Type"))
	isJSON := mt == "application/json" || strings.HasSuffix(mt, "+json")
	switch {
	case res.StatusCode == http.StatusUnauthorized:
		return fmt.Errorf("%s %s: %w (HTTP 401)", req.Method, what, ErrUnauthorized)
	case (res.StatusCode == http.StatusOK || res.StatusCode == http.StatusBadRequest) && isJSON:
	default:
		return fmt.Errorf("%s %s on %s: HTTP %d; is the GitHub URL right?", req.Method, what, req.URL.Host, res.StatusCode)
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s: decode the answer: %w", req.Method, what, err)
	}
	return nil
}

// redactURLError drops the URL from a transport error: the URLs here hold
// no secret, but keeping errors free of request details is the habit that
// keeps them free of secrets.
func redactURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// User is who a token belongs to.
type User struct {
	Login string
	Name  string
	// Scopes are the token's OAuth scopes as GitHub reports them.
	// ScopesKnown is false for tokens GitHub reports none for
	// (fine-grained tokens have permissions instead of scopes).
	Scopes      []string
	ScopesKnown bool
}

// User asks the API who token belongs to and what scopes it has.
func (c *Client) User(ctx context.Context, token string) (*User, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.APIURL+"/user", nil)
	if err != nil {
		return nil, fmt.Errorf("GET /user: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/vnd.github+json")
	req.Header.Set("X-GitHub-Api-Version", "2022-11-28")
	res, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("GET /user: %w", redactURLError(err))
	}
	defer res.Body.Close()
	body, err := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("GET /user: read the answer: %w", err)
	}
	switch {
	case res.StatusCode == http.StatusUnauthorized:
		return nil, fmt.Errorf("GET /user: %w (HTTP 401)", ErrUnauthorized)
	case res.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("GET /user on %s: HTTP %d; is the GitHub API URL right?", req.URL.Host, res.StatusCode)
	}
	var u struct {
		Login string `json:"login"`
		Name  string `json:"name"`
	}
	if err := json.Unmarshal(body, &u); err != nil || u.Login == "" {
		return nil, fmt.Errorf("GET /user on %s: the answer names no login; is the GitHub API URL right?", req.URL.Host)
	}
	out := &User{Login: u.Login, Name: u.Name}
	if h, ok := res.Header["X-Oauth-Scopes"]; ok {
		out.ScopesKnown = true
		out.Scopes = splitScopes(strings.Join(h, ","), ",")
	}
	return out, nil
}

// splitScopes splits GitHub's scope lists ("repo, read:packages" in the
// header, "repo,read:packages" in the token answer).
func splitScopes(s, sep string) []string {
	var out []string
	for _, f := range strings.Split(s, sep) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// MissingScopes returns the scopes of want that have does not cover. A scope
// covers its sub-scopes as GitHub defines them: repo covers repo:status
// and friends, write:packages covers read:packages.
func MissingScopes(have, want []string) []string {
	covers := map[string][]string{
		"repo":           {"repo:status", "repo_deployment", "public_repo", "repo:invite", "security_events"},
		"write:packages": {"read:packages"},
	}
	got := map[string]bool{}
	for _, h := range have {
		got[h] = true
		for _, s := range covers[h] {
			got[s] = true
		}
	}
	var out []string
	for _, w := range want {
		if !got[w] {
			out = append(out, w)
		}
	}
	return out
}
