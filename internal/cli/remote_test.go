package cli

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/internal/testenv"
)

// A user added on the control plane's machine reaches its API from
// another home through a context (server, CA, token); secrets stay
// write-only; the token is sealed in the config; once the user is
// removed the same command is refused.
func TestRemoteContextWorksUntilTheUserIsRemoved(t *testing.T) {
	certFile, keyFile := testenv.SelfSignedCert(t)
	server := "https://" + testenv.FreePort(t)
	e := newEnvWith(t, func(c *controlplane.Config) {
		c.APIOnly = true
		c.Listen, c.TLSCertFile, c.TLSKeyFile = server, certFile, keyFile
	})
	token := strings.TrimSpace(e.must("users", "add", "alice").stdout)
	if !strings.HasPrefix(token, "acp_") {
		t.Fatalf("users add printed %q, want the token", token)
	}
	if out := e.must("users", "list").stdout; !strings.Contains(out, "alice") || strings.Contains(out, token) {
		t.Errorf("users list:\n%s\nwant alice, never a token", out)
	}

	client := t.TempDir() // another machine's home
	at := func(args ...string) result { return e.run(append([]string{"--home", client}, args...)...) }
	// The token comes on stdin, never as a flag that ps would show.
	if r := e.runIn("", "--home", client, "config", "set-context", "team", "--server", server, "--token-stdin", "--ca-file", certFile); r.err == nil || !strings.Contains(r.stderr, "no token") {
		t.Errorf("set-context --token-stdin with nothing on stdin:\n%s\nwant refused", r)
	}
	if r := e.runIn(token+"\n", "--home", client, "config", "set-context", "team", "--server", server, "--token-stdin", "--token", token); r.err == nil {
		t.Errorf("set-context with --token and --token-stdin:\n%s\nwant refused", r)
	}
	if r := e.runIn(token+"\n", "--home", client, "config", "set-context", "team", "--server", server, "--token-stdin", "--ca-file", certFile); r.err != nil {
		t.Fatalf("%s", r)
	}
	if r := at("config", "use-context", "team"); r.err != nil {
		t.Fatalf("%s", r)
	}
	const value = "canary-remote-7e6d5c4b3a"
	if r := at("secrets", "new", "hf", "HF_TOKEN="+value); r.err != nil {
		t.Fatalf("%s", r)
	}
	r := at("secrets", "list")
	if r.err != nil || !strings.Contains(r.stdout, "HF_TOKEN") {
		t.Fatalf("%s", r)
	}
	gc := at("config", "get-contexts")
	cfg, err := os.ReadFile(filepath.Join(client, ConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	for what, text := range map[string]string{"secrets list": r.stdout + r.stderr, "get-contexts": gc.stdout, "the config file": string(cfg), "the control plane's log": e.log.String()} {
		for _, secret := range []string{value, token, strings.TrimPrefix(token, "acp_")} {
			if strings.Contains(text, secret) {
				t.Errorf("%s holds a token or secret value", what)
			}
		}
	}
	if !strings.Contains(gc.stdout, "* ") || !strings.Contains(gc.stdout, "team") {
		t.Errorf("get-contexts:\n%s\nwant team current", gc.stdout)
	}

	// $ANYCLOUD_TOKEN stands in for --token.
	if r := at("--server", server, "--ca-file", certFile, "get", "deploy"); r.err == nil {
		t.Errorf("--server with no token:\n%s\nwant refused", r)
	}
	e.vars["ANYCLOUD_TOKEN"] = token
	if r := at("--server", server, "--ca-file", certFile, "get", "deploy"); r.err != nil {
		t.Errorf("--server with $ANYCLOUD_TOKEN:\n%s", r)
	}
	delete(e.vars, "ANYCLOUD_TOKEN")

	e.must("users", "remove", "alice")
	if r := at("secrets", "list"); r.err == nil || !strings.Contains(r.stderr, "not valid") {
		t.Errorf("after alice was removed:\n%s\nwant refused", r)
	}
	if r := at("--server", server, "--token", "acp_wrong", "--ca-file", certFile, "get", "deploy"); r.err == nil || !strings.Contains(r.stderr, "not valid") {
		t.Errorf("a wrong token:\n%s\nwant refused", r)
	}
	if r := at("--context", "local", "config", "get-contexts"); r.err != nil {
		t.Errorf("%s", r)
	}
}

// controller --listen beyond loopback without TLS does not start.
func TestControllerRefusesToListenBeyondLoopbackWithoutTLS(t *testing.T) {
	home := t.TempDir()
	r := (&env{t: t, home: home, vars: map[string]string{}}).run("controller", "--api-only", "--listen", "http://0.0.0.0:0")
	if r.err == nil || !strings.Contains(r.stderr, "without TLS") {
		t.Errorf("%s\nwant refused", r)
	}
}
