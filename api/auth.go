package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/anycloud/anycloud/state"
)

// The API is served on two kinds of listener. The unix socket (mode 0600)
// is the machine's owner: no token. A TCP listener (--listen) is remote:
// every request carries "Authorization: Bearer TOKEN" of a user that
// `anycloud users add` made, checked against the store on every request,
// so that a removed user is refused at once; managing users is for the
// socket only. A TCP listener beyond loopback is served only over TLS.

type remoteUser struct{}

// RemoteHandler is Handler for a TCP listener: each request must carry a
// valid bearer token, or is answered 401.
func (s *Server) RemoteHandler() http.Handler {
	h := s.Handler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		users, ok := s.Store.(state.APIUsers)
		token, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || !found {
			unauthorized(w, "a remote request needs a bearer token (anycloud users add NAME makes one)")
			return
		}
		name, err := users.Authenticate(r.Context(), strings.TrimSpace(token))
		if errors.Is(err, state.ErrUnauthorized) {
			unauthorized(w, "the token is not valid (its user may have been removed)")
			return
		}
		if err != nil {
			s.writeError(w, err)
			return
		}
		h.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), remoteUser{}, name)))
	})
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="anycloud"`)
	writeStatus(w, Status{Code: http.StatusUnauthorized, Reason: ReasonUnauthorized, Message: msg})
}

// remote returns the user of a remote request, if it is one.
func remote(r *http.Request) (string, bool) {
	name, ok := r.Context().Value(remoteUser{}).(string)
	return name, ok
}

// UserToken is the answer to adding a user: its token, shown this once.
type UserToken struct {
	Name  string `json:"name"`
	Token string `json:"token"`
}

func (s *Server) apiUsers(w http.ResponseWriter, r *http.Request) (state.APIUsers, bool) {
	if who, ok := remote(r); ok {
		writeStatus(w, Status{Code: http.StatusForbidden, Reason: ReasonForbidden, Message: fmt.Sprintf("user %s: users are managed on the control plane's machine (its socket), not remotely", who)})
		return nil, false
	}
	u, ok := s.Store.(state.APIUsers)
	if !ok {
		writeStatus(w, Status{Code: http.StatusNotImplemented, Reason: ReasonBadRequest, Message: "this store keeps no API users"})
	}
	return u, ok
}

func (s *Server) addUser(w http.ResponseWriter, r *http.Request) {
	u, ok := s.apiUsers(w, r)
	if !ok {
		return
	}
	var req struct {
		Name string `json:"name"`
	}
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		writeStatus(w, Status{Code: 400, Reason: ReasonBadRequest, Message: "want {\"name\": NAME}"})
		return
	}
	token, err := u.AddAPIUser(r.Context(), req.Name)
	if err != nil {
		s.writeError(w, err)
		return
	}
	s.Log.Info("API user added", "user", req.Name)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusCreated, UserToken{Name: req.Name, Token: token})
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) {
	u, ok := s.apiUsers(w, r)
	if !ok {
		return
	}
	users, err := u.ListAPIUsers(r.Context())
	if err != nil {
		s.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, users)
}

func (s *Server) removeUser(w http.ResponseWriter, r *http.Request) {
	u, ok := s.apiUsers(w, r)
	if !ok {
		return
	}
	if err := u.RemoveAPIUser(r.Context(), r.PathValue("name")); err != nil {
		s.writeError(w, err)
		return
	}
	s.Log.Info("API user removed", "user", r.PathValue("name"))
	w.WriteHeader(http.StatusNoContent)
}

// ListenRemote opens the API's TCP listener for a --listen URL:
// https://ADDR with a certificate and key, or http://ADDR on a loopback
// address only (a token in the clear must not cross a network).
func ListenRemote(listen, certFile, keyFile string) (net.Listener, error) {
	u, err := url.Parse(listen)
	if err != nil || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return nil, fmt.Errorf("--listen %q: want https://HOST:PORT", listen)
	}
	switch u.Scheme {
	case "https":
		if certFile == "" || keyFile == "" {
			return nil, fmt.Errorf("--listen %s: --tls-cert-file and --tls-key-file are required", listen)
		}
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert-file/--tls-key-file: %w", err)
		}
		ln, err := net.Listen("tcp", u.Host)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", u.Host, err)
		}
		return tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}), nil
	case "http":
		host, _, err := net.SplitHostPort(u.Host)
		if err != nil {
			return nil, fmt.Errorf("--listen %s: %w", listen, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("--listen %s: refusing to serve the API beyond loopback without TLS; use https:// with --tls-cert-file and --tls-key-file", listen)
		}
		ln, err := net.Listen("tcp", u.Host)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", u.Host, err)
		}
		return ln, nil
	}
	return nil, fmt.Errorf("--listen %q: want https://HOST:PORT (or http:// on loopback)", listen)
}

// RemoteOptions say how to reach a control plane over the network.
type RemoteOptions struct {
	// Server is https://HOST:PORT (or http:// on loopback).
	Server string
	// Token is the user's bearer token.
	Token string
	// CAFile verifies the server's certificate; the system's roots when
	// empty.
	CAFile string
}

// NewRemoteClient returns a client of a control plane's TCP listener.
func NewRemoteClient(o RemoteOptions) (*Client, error) {
	u, err := url.Parse(o.Server)
	if err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("server %q: want https://HOST:PORT", o.Server)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file %s: no PEM certificate in it", o.CAFile)
		}
		tlsCfg.RootCAs = pool
	}
	tr := &http.Transport{TLSClientConfig: tlsCfg, MaxIdleConns: 4, IdleConnTimeout: 90 * time.Second}
	base := u.Scheme + "://" + u.Host
	return &Client{socket: base, base: base, token: o.Token, http: &http.Client{Transport: tr}}, nil
}
