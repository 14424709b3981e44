package state_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/anycloud/anycloud/internal/etcdtest"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

func openEtcd(t *testing.T, home, prefix string, opts state.EtcdOptions) *state.Etcd {
	t.Helper()
	opts.Client, opts.Prefix, opts.Home = etcdClient, prefix, home
	s, err := state.OpenEtcd(context.Background(), opts)
	if err != nil {
		t.Fatalf("OpenEtcd: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// Every key and value etcd holds of a store with secrets is read back raw:
// no value is there in the clear, in hex or in base64, and the cipher key
// is not there at all.
func TestEtcdHoldsNoSecretInTheClearNorTheKey(t *testing.T) {
	home := t.TempDir()
	prefix := etcdPrefix(home)
	s := openEtcd(t, home, prefix, state.EtcdOptions{})
	ctx := context.Background()
	apply(t, s, bundleWrite("hf", map[string]string{"HF_TOKEN": canary}), credentialsWrite("aws", canaryCreds))
	applyObject(t, s, deployment("train", "aws", "hf"))
	if err := s.RecordEvent(ctx, manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "train"}, state.Event{Type: state.EventNormal, Reason: "Launched", Message: "ok"}); err != nil {
		t.Fatal(err)
	}
	key, err := os.ReadFile(filepath.Join(home, seal.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := etcdClient.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) < 5 {
		t.Fatalf("etcd holds %d keys under %s, want the store's", len(resp.Kvs), prefix)
	}
	for _, kv := range resp.Kvs {
		what := "etcd key " + string(kv.Key)
		assertNoSecret(t, what, kv.Key, canary, canaryCreds)
		assertNoSecret(t, what, kv.Value, canary, canaryCreds)
		assertNoSecret(t, what, kv.Value, string(key))
	}
	got, _, err := s.OpenSecrets(ctx, manifests.KindSecretBundle, "hf")
	if err != nil || got["HF_TOKEN"] != canary {
		t.Fatalf("OpenSecrets = %d values, %v; want the value back", len(got), err)
	}
}

// A second control plane with another cipher key is refused and changes
// nothing; with the same key file it reads what the first wrote.
func TestEtcdStoreOpensOnlyWithItsCipherKey(t *testing.T) {
	home := t.TempDir()
	prefix := etcdPrefix(home)
	s := openEtcd(t, home, prefix, state.EtcdOptions{})
	apply(t, s, bundleWrite("hf", map[string]string{"HF_TOKEN": canary}))

	other := t.TempDir()
	_, err := state.OpenEtcd(context.Background(), state.EtcdOptions{Client: etcdClient, Prefix: prefix, Home: other})
	if !errors.Is(err, seal.ErrKeyMissing) {
		t.Fatalf("open without the key: %v, want ErrKeyMissing", err)
	}
	if _, err := os.Stat(filepath.Join(other, seal.KeyFile)); err == nil {
		t.Fatalf("a new key was made over sealed data")
	}
	if _, err := seal.CreateKey(filepath.Join(other, seal.KeyFile)); err != nil {
		t.Fatal(err)
	}
	_, err = state.OpenEtcd(context.Background(), state.EtcdOptions{Client: etcdClient, Prefix: prefix, Home: other})
	if err == nil || !strings.Contains(err.Error(), "does not open the sealed data") {
		t.Fatalf("open with another key: %v, want refused", err)
	}
	// The second control plane is given the first one's key file (and its
	// sealing key, for `secrets seal`).
	for _, f := range []string{seal.BoxKeyFile} {
		b, _ := os.ReadFile(filepath.Join(home, f))
		os.WriteFile(filepath.Join(other, f), b, 0o600)
	}
	s2 := openEtcd(t, other, prefix, state.EtcdOptions{CipherKeyFile: filepath.Join(home, seal.KeyFile)})
	if s2.ClusterID() != s.ClusterID() {
		t.Errorf("cluster id %q, want the store's %q", s2.ClusterID(), s.ClusterID())
	}
	got, _, err := s2.OpenSecrets(context.Background(), manifests.KindSecretBundle, "hf")
	if err != nil || got["HF_TOKEN"] != canary {
		t.Fatalf("OpenSecrets on the second control plane: %d values, %v", len(got), err)
	}
}

// A fenced store writes while its fence holds and never after: once the
// leader key is gone (its lease lapsed) or belongs to another, every
// write, events included, fails with ErrNotLeader and leaves etcd as it
// was.
func TestFencedWritesStopWhenLeadershipIsLost(t *testing.T) {
	home := t.TempDir()
	prefix := etcdPrefix(home)
	s := openEtcd(t, home, prefix, state.EtcdOptions{})
	ctx := context.Background()
	leaderKey := prefix + "leader/test"
	lease, err := etcdClient.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	put, err := etcdClient.Put(ctx, leaderKey, "a", clientv3.WithLease(lease.ID))
	if err != nil {
		t.Fatal(err)
	}
	f := s.Fenced(state.Fence{Key: leaderKey, Rev: put.Header.Revision})
	applyObject(t, f, deployment("train", manifests.LocalCredentials))
	if err := f.CheckFence(ctx); err != nil {
		t.Fatalf("CheckFence while leading: %v", err)
	}

	// The lease is revoked, as etcd does when it lapses: the key goes.
	if _, err := etcdClient.Revoke(ctx, lease.ID); err != nil {
		t.Fatal(err)
	}
	d := getDeployment(t, f, "train")
	d.Status.Phase = manifests.PhaseRunning
	writes := map[string]error{
		"CheckFence":  f.CheckFence(ctx),
		"RecordEvent": f.RecordEvent(ctx, manifests.Ref(d), state.Event{Type: state.EventNormal, Reason: "X", Message: "y"}),
	}
	_, writes["UpdateStatus"] = f.UpdateStatus(ctx, d)
	_, writes["Apply"] = f.Apply(ctx, []state.Write{{Object: deployment("other", manifests.LocalCredentials)}}, state.ApplyOptions{})
	_, writes["Delete"] = f.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{})
	for what, err := range writes {
		if !errors.Is(err, state.ErrNotLeader) {
			t.Errorf("%s after the fence lapsed: %v, want ErrNotLeader", what, err)
		}
	}
	// A new leader's key, even under the same name, is not the old fence.
	if _, err := etcdClient.Put(ctx, leaderKey, "b"); err != nil {
		t.Fatal(err)
	}
	if _, err := f.UpdateStatus(ctx, d); !errors.Is(err, state.ErrNotLeader) {
		t.Errorf("UpdateStatus under another leader's key: %v, want ErrNotLeader", err)
	}
	if got := getDeployment(t, s, "train"); got.Status.Phase == manifests.PhaseRunning || exists(t, s, manifests.KindDeployment, "other") {
		t.Errorf("a refused write reached the store")
	}
	if evs, _ := s.Events(ctx, manifests.Ref(d)); len(evs) != 0 {
		t.Errorf("a refused event reached the store: %v", evs)
	}
	// The store's own (unfenced) writes carry on: the API of a follower.
	applyObject(t, s, deployment("other", manifests.LocalCredentials))
}

// Events are kept under a lease: they go by themselves once it lapses.
func TestEtcdEventsExpireWithTheirLease(t *testing.T) {
	t.Parallel()
	home := t.TempDir()
	s := openEtcd(t, home, etcdPrefix(home), state.EtcdOptions{EventTTL: 2 * time.Second})
	ctx := context.Background()
	applyObject(t, s, deployment("train", manifests.LocalCredentials))
	ref := manifests.ObjectRef{Kind: manifests.KindDeployment, Name: "train"}
	if err := s.RecordEvent(ctx, ref, state.Event{Type: state.EventNormal, Reason: "Launched", Message: "ok"}); err != nil {
		t.Fatal(err)
	}
	if evs, err := s.Events(ctx, ref); err != nil || len(evs) != 1 {
		t.Fatalf("Events = %v, %v; want the one recorded", evs, err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; {
		evs, err := s.Events(ctx, ref)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events still kept 10s after a 2s lease")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two control planes apply to the same store at once: every write lands
// once, resourceVersions never repeat, and the in-use index holds.
func TestEtcdConcurrentWritersFromTwoStores(t *testing.T) {
	home := t.TempDir()
	prefix := etcdPrefix(home)
	a := openEtcd(t, home, prefix, state.EtcdOptions{})
	b := openEtcd(t, home, prefix, state.EtcdOptions{})
	apply(t, a, bundleWrite("hf", map[string]string{"K": "v"}))
	errs := make(chan error, 2)
	for i, s := range []*state.Etcd{a, b} {
		go func() {
			for j := range 20 {
				name := string(rune('a'+i)) + "-" + string(rune('a'+j))
				if _, err := s.Apply(context.Background(), []state.Write{{Object: deployment(name, manifests.LocalCredentials, "hf")}}, state.ApplyOptions{}); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := len(listNames(t, a, manifests.KindDeployment)); n != 40 {
		t.Errorf("%d deployments, want 40", n)
	}
	users, err := b.Users(context.Background(), manifests.KindSecretBundle, "hf")
	if err != nil || len(users) != 40 {
		t.Errorf("bundle hf has %d users (%v), want 40", len(users), err)
	}
	if _, err := a.Delete(context.Background(), manifests.KindSecretBundle, "hf", state.DeleteOptions{}); !errors.Is(err, state.ErrInUse) {
		t.Errorf("delete of the bundle in use: %v, want ErrInUse", err)
	}
}

// A watch carries on, without a gap or a repeat, while one of three etcd
// members goes away: the client moves to another member and the watch
// resumes from the revision after the last event it sent.
func TestEtcdWatchResumesWhenAMemberGoes(t *testing.T) {
	t.Parallel()
	c, err := etcdtest.Start(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	client, err := c.Client()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	home := t.TempDir()
	s, err := state.OpenEtcd(context.Background(), state.EtcdOptions{Client: client, Home: home})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	_, ch, err := s.Watch(ctx, manifests.KindDeployment)
	if err != nil {
		t.Fatal(err)
	}
	const n = 30
	for i := range n {
		if i == n/2 {
			c.Stop(0)
		}
		name := fmt.Sprintf("d-%02d", i)
		for attempt := 0; ; attempt++ {
			_, err := s.Apply(context.Background(), []state.Write{{Object: deployment(name, manifests.LocalCredentials)}}, state.ApplyOptions{})
			if err == nil {
				break
			}
			if attempt > 50 {
				t.Fatalf("apply %s while a member is gone: %v", name, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	var last uint64
	for i := range n {
		ev := next(t, ch)
		want := fmt.Sprintf("d-%02d", i)
		if ev.Type != state.Added || ev.Object.GetMeta().Name != want {
			t.Fatalf("event %d: %s %s, want ADDED %s", i, ev.Type, ev.Object.GetMeta().Name, want)
		}
		rv := mustRV(t, ev.Object)
		if rv <= last {
			t.Fatalf("event %d at resourceVersion %d, not after %d", i, rv, last)
		}
		last = rv
	}
}
