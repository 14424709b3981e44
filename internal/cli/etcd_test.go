package cli

import (
	"os"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/internal/etcdtest"
)

// On an etcd store, status shows the store, the leader and the replicas.
func TestStatusShowsTheEtcdStoreItsLeaderAndReplicas(t *testing.T) {
	dir, err := os.MkdirTemp("", "etcd-")
	if err != nil {
		t.Fatal(err)
	}
	c, err := etcdtest.Start(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	e := newEnvWith(t, func(cfg *controlplane.Config) {
		cfg.Store = "etcd://" + strings.Join(c.Endpoints(), ",")
		cfg.Name = "alpha"
		cfg.LeaderLease = 2 * time.Second
	})
	var out string
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		// The election's key names alpha a moment before alpha itself
		// has seen that it leads (and says for how long): wait for both.
		out = e.must("status").stdout
		if strings.Contains(out, "leader: alpha") && strings.Contains(out, "leader for") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never showed alpha leading:\n%s", out)
		}
	}
	for _, want := range []string{"Store: etcd " + c.Endpoints()[0], "prefix /anycloud/", "REPLICA", "alpha"} {
		if !strings.Contains(out, want) {
			t.Errorf("status:\n%s\nwant %q", out, want)
		}
	}
}
