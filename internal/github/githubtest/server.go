// Package githubtest is a fake GitHub for tests: the OAuth device flow
// (POST /login/device/code, POST /login/oauth/access_token) and the API's
// GET /user, on an httptest server on 127.0.0.1. GitHub is the one part
// of anycloud's world that tests cannot run for real, so this fake keeps
// GitHub's rules: answers with status 200 and an "error" field for OAuth
// errors, slow_down when polled faster than the interval, a device code
// that works once, and X-OAuth-Scopes on /user for a good token, 401 for
// any other. Other routes (a git server, say) can be added to Mux, so that
// one host serves both, as github.com does.
package githubtest

import (
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// Server is the fake. Set its fields before the client starts; read them
// under no lock only after the client is done.
type Server struct {
	*httptest.Server
	Mux *http.ServeMux

	ClientID   string
	DeviceCode string
	UserCode   string
	// Interval and ExpiresIn are the device flow's, in seconds.
	Interval  int
	ExpiresIn int
	// Polls scripts the answers to successive token polls: an OAuth error
	// code ("authorization_pending", "slow_down", "access_denied",
	// "expired_token", ...) or "" for the token. Polls past the script
	// answer "authorization_pending".
	Polls []string

	// Token is the token granted and the one /user accepts; Login and
	// Scopes are who it belongs to and the X-OAuth-Scopes header ("-"
	// sends no header, as for a fine-grained token).
	Token  string
	Login  string
	Scopes string

	mu sync.Mutex
	// polls counts token polls so far; requests lists every request as
	// "METHOD PATH".
	polls    int
	requests []string
	granted  bool
}

// NewServer starts a fake GitHub on 127.0.0.1 that grants token on the
// first poll, with scopes "repo, read:packages", and stops it when the
// test ends.
func NewServer(t testing.TB, token string) *Server {
	t.Helper()
	return NewServerOn(t, token, nil)
}

// NewServerOn is NewServer on the listener l (nil: a free port of
// 127.0.0.1), for a fake that containers must reach too.
func NewServerOn(t testing.TB, token string, l net.Listener) *Server {
	t.Helper()
	s := &Server{
		Mux: http.NewServeMux(), ClientID: "fake-client-id",
		DeviceCode: "fake-device-code-3584d83530557fdd", UserCode: "WDJB-MJHT",
		Interval: 5, ExpiresIn: 900, Polls: []string{""},
		Token: token, Login: "octocat", Scopes: "repo, read:packages",
	}
	s.Mux.HandleFunc("POST /login/device/code", s.deviceCode)
	s.Mux.HandleFunc("POST /login/oauth/access_token", s.accessToken)
	s.Mux.HandleFunc("GET /user", s.user)
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.requests = append(s.requests, r.Method+" "+r.URL.Path)
		s.mu.Unlock()
		s.Mux.ServeHTTP(w, r)
	}))
	if l != nil {
		s.Server.Listener.Close()
		s.Server.Listener = l
	}
	s.Server.Start()
	t.Cleanup(s.Close)
	return s
}

// PollCount is how many token polls the fake answered.
func (s *Server) PollCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.polls
}

// Requests lists the requests the fake received, as "METHOD PATH".
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

func (s *Server) deviceCode(w http.ResponseWriter, r *http.Request) {
	if r.FormValue("client_id") != s.ClientID {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Not Found"})
		return
	}
	s.mu.Lock()
	interval := s.Interval
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"device_code": s.DeviceCode, "user_code": s.UserCode,
		"verification_uri": s.URL + "/login/device",
		"expires_in":       s.ExpiresIn, "interval": interval,
	})
}

func (s *Server) accessToken(w http.ResponseWriter, r *http.Request) {
	oauthErr := func(code string, extra map[string]any) {
		body := map[string]any{"error": code, "error_description": "fake: " + code}
		for k, v := range extra {
			body[k] = v
		}
		writeJSON(w, http.StatusOK, body)
	}
	switch {
	case r.FormValue("client_id") != s.ClientID:
		oauthErr("incorrect_client_credentials", nil)
		return
	case r.FormValue("grant_type") != "urn:ietf:params:oauth:grant-type:device_code":
		oauthErr("unsupported_grant_type", nil)
		return
	case r.FormValue("device_code") != s.DeviceCode:
		oauthErr("incorrect_device_code", nil)
		return
	}
	s.mu.Lock()
	i := s.polls
	s.polls++
	granted := s.granted
	s.mu.Unlock()
	if granted {
		// A device code works once.
		oauthErr("incorrect_device_code", nil)
		return
	}
	answer := "authorization_pending"
	if i < len(s.Polls) {
		answer = s.Polls[i]
	}
	switch answer {
	case "":
		s.mu.Lock()
		s.granted = true
		s.mu.Unlock()
		writeJSON(w, http.StatusOK, map[string]string{
			"access_token": s.Token, "token_type": "bearer",
			"scope": strings.ReplaceAll(s.Scopes, " ", ""),
		})
	case "slow_down":
		s.mu.Lock()
		s.Interval += 5
		interval := s.Interval
		s.mu.Unlock()
		oauthErr(answer, map[string]any{"interval": interval})
	default:
		oauthErr(answer, nil)
	}
}

func (s *Server) user(w http.ResponseWriter, r *http.Request) {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok {
		tok, ok = strings.CutPrefix(auth, "token ")
	}
	if !ok || tok != s.Token || s.Token == "" {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"message": "Bad credentials"})
		return
	}
	if s.Scopes != "-" {
		w.Header().Set("X-OAuth-Scopes", s.Scopes)
	}
	writeJSON(w, http.StatusOK, map[string]any{"login": s.Login, "id": 1, "name": "The Octocat"})
}
