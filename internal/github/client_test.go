package github

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/anycloud/anycloud/internal/github/githubtest"
)

// fakeClock is the device flow's clock: Sleep records each wait and moves
// time on at once, so that a test sees exactly how the client paced its
// polls without waiting for them.
type fakeClock struct {
	now    time.Time
	sleeps []time.Duration
}

func (c *fakeClock) Now() time.Time { return c.now }

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.sleeps = append(c.sleeps, d)
	c.now = c.now.Add(d)
	return nil
}

const canary = "gho_CANARYgithubtoken0123456789abcdef"

func newTestClient(t *testing.T, s *githubtest.Server) (*Client, *fakeClock) {
	t.Helper()
	c, err := NewClient(s.URL, s.URL, s.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
	c.Now, c.Sleep = clock.Now, clock.Sleep
	return c, clock
}

func TestDeviceFlowPollsAtTheIntervalAndSlowsDownWhenAsked(t *testing.T) {
	s := githubtest.NewServer(t, canary)
	s.Polls = []string{"authorization_pending", "slow_down", "authorization_pending", "slow_down", ""}
	c, clock := newTestClient(t, s)
	ctx := context.Background()

	dc, err := c.RequestDeviceCode(ctx, DefaultScopes)
	if err != nil {
		t.Fatal(err)
	}
	if dc.UserCode != "WDJB-MJHT" || dc.VerificationURI != s.URL+"/login/device" || dc.Interval != 5*time.Second {
		t.Errorf("device code %+v", dc)
	}
	tok, err := c.PollToken(ctx, dc)
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != canary {
		t.Errorf("token %q", tok.AccessToken)
	}
	if diff := cmp.Diff([]string{"repo", "read:packages"}, tok.Scopes); diff != "" {
		t.Errorf("scopes (-want +got):\n%s", diff)
	}
	// Each slow_down adds five seconds, for every later poll too.
	want := []time.Duration{5 * time.Second, 5 * time.Second, 10 * time.Second, 10 * time.Second, 15 * time.Second}
	if diff := cmp.Diff(want, clock.sleeps); diff != "" {
		t.Errorf("waits before each poll (-want +got):\n%s", diff)
	}
	if n := s.PollCount(); n != 5 {
		t.Errorf("%d polls, want 5", n)
	}
}

func TestDeviceFlowTakesTheIntervalGitHubNamesOnSlowDown(t *testing.T) {
	s := githubtest.NewServer(t, canary)
	s.Interval = 7 // at the slow_down, the fake names 7+5 = 12 s
	s.Polls = []string{"slow_down", ""}
	c, clock := newTestClient(t, s)
	ctx := context.Background()
	dc, err := c.RequestDeviceCode(ctx, DefaultScopes)
	if err != nil {
		t.Fatal(err)
	}
	// Told 1 s, the client would slow down to 6 s; GitHub's 12 s wins.
	dc.Interval = time.Second
	if _, err := c.PollToken(ctx, dc); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]time.Duration{time.Second, 12 * time.Second}, clock.sleeps); diff != "" {
		t.Errorf("waits (-want +got):\n%s", diff)
	}
}

func TestDeviceFlowEnds(t *testing.T) {
	tests := []struct {
		name      string
		polls     []string
		expiresIn int
		want      error
		wantPolls int
	}{
		{name: "access denied", polls: []string{"authorization_pending", "access_denied"}, expiresIn: 900, want: ErrAccessDenied, wantPolls: 2},
		{name: "GitHub says the code expired", polls: []string{"authorization_pending", "expired_token"}, expiresIn: 900, want: ErrExpired, wantPolls: 2},
		// 5 s interval, 12 s life: polls at 5 and 10 s; the next would
		// be past expiry, so the client stops without asking.
		{name: "the code expires on the clock", polls: nil, expiresIn: 12, want: ErrExpired, wantPolls: 2},
		{name: "device flow disabled", polls: []string{"device_flow_disabled"}, expiresIn: 900, want: ErrDeviceFlowDisabled, wantPolls: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := githubtest.NewServer(t, canary)
			s.Polls, s.ExpiresIn = tt.polls, tt.expiresIn
			c, _ := newTestClient(t, s)
			ctx := context.Background()
			dc, err := c.RequestDeviceCode(ctx, DefaultScopes)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := c.PollToken(ctx, dc)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, %v; want %v", tok, err, tt.want)
			}
			if n := s.PollCount(); n != tt.wantPolls {
				t.Errorf("%d polls, want %d", n, tt.wantPolls)
			}
		})
	}
}

func TestDeviceFlowStopsWhenTheContextEnds(t *testing.T) {
	s := githubtest.NewServer(t, canary)
	s.Polls = nil // pending for ever
	c, err := NewClient(s.URL, s.URL, s.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	dc, err := c.RequestDeviceCode(ctx, DefaultScopes)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := c.PollToken(ctx, dc); done <- err }()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("got %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("PollToken did not return after its context ended")
	}
}

func TestDeviceFlowWithAnUnknownClientIDSaysSo(t *testing.T) {
	s := githubtest.NewServer(t, canary)
	c, _ := newTestClient(t, s)
	dc, err := c.RequestDeviceCode(context.Background(), DefaultScopes)
	if err != nil {
		t.Fatal(err)
	}
	c.ClientID = "not-the-app"
	if _, err := c.PollToken(context.Background(), dc); !errors.Is(err, ErrUnknownClient) {
		t.Errorf("poll with another client id: %v, want ErrUnknownClient", err)
	}
	if _, err := c.RequestDeviceCode(context.Background(), DefaultScopes); !errors.Is(err, ErrUnauthorized) {
		t.Errorf("device code with another client id: %v", err)
	}
}

func TestAWrongHostSaysSo(t *testing.T) {
	s := githubtest.NewServer(t, canary)
	c, err := NewClient(s.URL+"/nothing-here", s.URL+"/nothing-here", s.ClientID)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.RequestDeviceCode(context.Background(), DefaultScopes)
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") || !strings.Contains(err.Error(), "GitHub URL") {
		t.Errorf("device code from a wrong host: %v", err)
	}
	_, err = c.User(context.Background(), canary)
	if err == nil || !strings.Contains(err.Error(), "HTTP 404") || strings.Contains(err.Error(), canary) {
		t.Errorf("user from a wrong host: %v", err)
	}
}

func TestUserReportsLoginAndScopes(t *testing.T) {
	s := githubtest.NewServer(t, canary)
	c, _ := newTestClient(t, s)
	ctx := context.Background()
	u, err := c.User(ctx, canary)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&User{Login: "octocat", Name: "The Octocat", Scopes: []string{"repo", "read:packages"}, ScopesKnown: true}, u); diff != "" {
		t.Errorf("user (-want +got):\n%s", diff)
	}

	s.Scopes = "-" // a fine-grained token: no X-OAuth-Scopes
	if u, err = c.User(ctx, canary); err != nil || u.ScopesKnown || u.Scopes != nil {
		t.Errorf("fine-grained token: %+v, %v", u, err)
	}

	_, err = c.User(ctx, "gho_wrong")
	if !errors.Is(err, ErrUnauthorized) {
		t.Errorf("wrong token: %v, want ErrUnauthorized", err)
	}
}

func TestCleanURLRefusesCredentialsWithoutEchoingThem(t *testing.T) {
	for _, tt := range []struct{ in, want, err string }{
		{in: "https://github.com/", want: "https://github.com"},
		{in: "http://127.0.0.1:8080", want: "http://127.0.0.1:8080"},
		{in: "https://ghe.example.com/api/v3/", want: "https://ghe.example.com/api/v3"},
		{in: "https://x-access-token:" + canary + "@github.com", err: "credentials"},
		{in: "ftp://github.com", err: "https://"},
		{in: "github.com", err: "https://"},
		{in: "https://github.com/?a=b", err: "query"},
	} {
		got, err := CleanURL(tt.in)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) || strings.Contains(err.Error(), canary) {
				t.Errorf("CleanURL(%q) = %q, %v; want an error about %s", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("CleanURL(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestTokenPrintsRedacted(t *testing.T) {
	tok := &Token{AccessToken: canary, Scopes: []string{"repo"}}
	l := &Login{Token: canary, User: "octocat"}
	for _, s := range []string{
		fmt.Sprintf("%v %+v %#v %s", tok, tok, tok, tok),
		fmt.Sprintf("%v %+v %#v %s", *tok, *tok, *tok, *tok),
		fmt.Sprintf("%v %+v %#v %s", l, l, l, l),
		fmt.Sprintf("%v %+v %#v %s", *l, *l, *l, *l),
	} {
		if strings.Contains(s, canary) {
			t.Errorf("printed: %s", s)
		}
	}
}

func TestMissingScopes(t *testing.T) {
	for _, tt := range []struct {
		have, want, missing []string
	}{
		{have: []string{"repo", "read:packages"}, want: DefaultScopes},
		{have: []string{"repo", "write:packages"}, want: DefaultScopes},
		{have: []string{"public_repo"}, want: DefaultScopes, missing: DefaultScopes},
		{have: []string{"repo"}, want: DefaultScopes, missing: []string{"read:packages"}},
	} {
		if diff := cmp.Diff(tt.missing, MissingScopes(tt.have, tt.want)); diff != "" {
			t.Errorf("MissingScopes(%v) (-want +got):\n%s", tt.have, diff)
		}
	}
}
