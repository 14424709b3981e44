package controlplane

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"github.com/anycloud/anycloud/api"
	"github.com/anycloud/anycloud/internal/etcdtest"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
)

// A control plane reaches an etcd that serves clients over TLS with
// --etcd-ca-file, leads, and stores what is applied.
func TestControlPlaneOnEtcdOverTLS(t *testing.T) {
	certFile, keyFile := testenv.SelfSignedCert(t)
	dir, err := os.MkdirTemp("", "etcd-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := etcdtest.StartWith(dir, 1, etcdtest.Options{CertFile: certFile, KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	home := testenv.ShortTempDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() {
		done <- Run(ctx, Config{
			Home: home, Log: logr.Discard(), Version: "test", Ready: func() { close(ready) },
			Store: "etcd://" + strings.Join(c.Endpoints(), ","), EtcdTLS: EtcdTLS{CAFile: certFile},
			Name: "tls", LeaderLease: 2 * time.Second, Providers: cloudProviders{newFakeCloud(), "tls"},
		})
	}()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("control plane on etcd over TLS: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("control plane not serving within 30s")
	}
	p := &plane{name: "tls", client: api.NewClient(filepath.Join(home, api.SocketFile))}
	waitFor(t, "it to lead", 15*time.Second, func() bool { return leader(p) == "tls" })
	if _, err := p.client.Apply(ctx, api.ApplyRequest{Items: []api.ApplyItem{deploymentItem(t, "train")}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "its VM", 15*time.Second, func() bool { return converged(p.client, []string{"train"}) })
	st, err := p.client.ControlPlane(ctx)
	if err != nil || st.Store != "etcd" || !strings.HasPrefix(st.Endpoints[0], "https://") {
		t.Errorf("control plane status %+v, %v: want etcd over https", st, err)
	}
	if _, err := p.client.Get(ctx, manifests.KindDeployment, "train"); err != nil {
		t.Error(err)
	}
}
