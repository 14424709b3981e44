package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// logBuffer is a logger's output, safe for concurrent writes.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// remoteAPI serves a fresh store on a socket (the owner) and on
// https://127.0.0.1:PORT (remote users), logging everything at V(1).
func remoteAPI(t *testing.T) (local *api.Client, server, caFile string, logs *logBuffer) {
	t.Helper()
	dir := t.TempDir()
	store, err := state.OpenBolt(dir, state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	logs = &logBuffer{}
	log := funcr.New(func(prefix, args string) { logs.Write([]byte(prefix + " " + args + "\n")) }, funcr.Options{Verbosity: 1})
	srv := &api.Server{Store: store, Sealing: store.SealingKey(), Log: log, Version: "test"}
	sock, err := os.MkdirTemp("", "api")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(sock) })
	sockLn, err := api.Listen(filepath.Join(sock, api.SocketFile))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := testenv.SelfSignedCert(t)
	ln, err := api.ListenRemote("https://127.0.0.1:0", certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); srv.ServeListener(ctx, sockLn) }()
	go func() { defer wg.Done(); srv.ServeRemote(ctx, ln) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return api.NewClient(filepath.Join(sock, api.SocketFile)), "https://" + ln.Addr().String(), certFile, logs
}

func remoteClient(t *testing.T, server, token, caFile string) *api.Client {
	t.Helper()
	c, err := api.NewRemoteClient(api.RemoteOptions{Server: server, Token: token, CAFile: caFile})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func isStatus(err error, code int) bool {
	var e *api.Error
	return errors.As(err, &e) && e.Status.Code == code
}

// Over TLS, a request without a token or with a wrong one is refused; a
// user's token works until the user is removed, and not one request
// after; secret values stay write-only; no token or value reaches the
// log.
func TestRemoteAPINeedsAValidTokenAndForgetsARemovedOne(t *testing.T) {
	local, server, caFile, logs := remoteAPI(t)
	ctx := context.Background()
	for _, token := range []string{"", "acp_wrong"} {
		_, err := remoteClient(t, server, token, caFile).List(ctx, manifests.KindDeployment)
		if !isStatus(err, 401) {
			t.Errorf("remote list with token %q: %v, want 401", token, err)
		}
	}
	alice, err := local.AddUser(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	c := remoteClient(t, server, alice.Token, caFile)
	const value = "canary-value-3f9a8b7c6d"
	b, _ := json.Marshal(&manifests.SecretBundle{TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindSecretBundle}, Metadata: manifests.ObjectMeta{Name: "hf"}})
	if _, err := c.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{{Object: b, Secrets: map[string]string{"HF_TOKEN": value}}}}); err != nil {
		t.Fatalf("remote apply with alice's token: %v", err)
	}
	objs, err := c.List(ctx, manifests.KindSecretBundle)
	if err != nil || len(objs) != 1 {
		t.Fatalf("remote list: %v, %v", objs, err)
	}
	shown, _ := json.Marshal(objs)
	if strings.Contains(string(shown), value) {
		t.Errorf("a secret value came back over TLS")
	}
	// Users are managed on the machine, not remotely.
	if _, err := c.AddUser(ctx, "mallory"); !isStatus(err, 403) {
		t.Errorf("remote users add: %v, want 403", err)
	}
	if err := local.RemoveUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.List(ctx, manifests.KindSecretBundle); !isStatus(err, 401) {
		t.Errorf("remote list right after alice was removed: %v, want 401", err)
	}
	for _, secret := range []string{alice.Token, value} {
		if strings.Contains(logs.String(), secret) {
			t.Errorf("the log holds a token or secret value")
		}
	}
	// The list of users shows names, never tokens.
	users, err := local.ListUsers(ctx)
	if err != nil || len(users) != 0 {
		t.Errorf("users after removal: %v, %v", users, err)
	}
}

// A TCP listener beyond loopback is refused without TLS, and https needs
// a certificate; plain http on loopback is allowed (tokens stay on the
// machine).
func TestListenRemoteRefusesTheNetworkWithoutTLS(t *testing.T) {
	for _, listen := range []string{"http://0.0.0.0:0", "http://192.0.2.1:0", "http://[::]:0", "https://127.0.0.1:0", "tcp://127.0.0.1:0", "127.0.0.1:0"} {
		if ln, err := api.ListenRemote(listen, "", ""); err == nil {
			ln.Close()
			t.Errorf("ListenRemote(%s) without TLS files: listening, want refused", listen)
		}
	}
	ln, err := api.ListenRemote("http://127.0.0.1:0", "", "")
	if err != nil {
		t.Fatalf("ListenRemote on loopback: %v", err)
	}
	ln.Close()
}

// A client that does not trust the server's certificate does not send
// its token.
func TestRemoteClientVerifiesTheServer(t *testing.T) {
	_, server, _, _ := remoteAPI(t)
	_, err := remoteClient(t, server, "acp_any", "").List(context.Background(), manifests.KindDeployment)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Errorf("list against an untrusted certificate: %v, want a certificate error", err)
	}
	resp, err := http.Get(strings.Replace(server, "https", "http", 1) + "/v1/deployments")
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Errorf("plain http to the TLS listener answered 200")
		}
	}
}
