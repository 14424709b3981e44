package state_test

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/anycloud/anycloud/internal/etcdtest"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
	"github.com/anycloud/anycloud/state"
)

// clock is a settable clock for BoltOptions.Now.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// etcdClient is the client of the package's embedded etcd (TestMain).
var etcdClient *clientv3.Client

// TestMain starts one embedded etcd member for the package's tests: each
// etcd store lives under its own prefix in it.
func TestMain(m *testing.M) {
	if os.Getenv("ANYCLOUD_ROTATE_HELPER_HOME") != "" {
		os.Exit(m.Run()) // the rotation crash tests' helper process
	}
	dir, err := os.MkdirTemp("", "state-etcd-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	c, err := etcdtest.Start(dir, 1)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	etcdClient, err = c.Client()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	etcdClient.Close()
	c.Close()
	os.Exit(code)
}

// contractStore is what the contract tests use of a store; every backend
// implements it.
type contractStore interface {
	state.Store
	state.Leftovers
	SealingKey() *seal.BoxKey
}

// eachBackend runs test once per backend, as subtests named bolt and etcd
// that run side by side: openStore and openStoreAt open a store of the
// backend that the running test's name says.
func eachBackend(t *testing.T, test func(t *testing.T)) {
	for _, be := range []string{"bolt", "etcd"} {
		t.Run(be, func(t *testing.T) {
			t.Parallel()
			test(t)
		})
	}
}

func onEtcd(t testing.TB) bool { return strings.Contains(t.Name(), "/etcd") }

// openStore opens a fresh store in a temporary home and closes it when the
// test ends.
func openStore(t testing.TB) (contractStore, string) {
	t.Helper()
	home := t.TempDir()
	return openStoreAt(t, home, state.BoltOptions{}), home
}

// openStoreAt opens the store of home: a bbolt file in it, or, under an
// etcd subtest, the keys under a prefix named for home in the package's
// etcd (with home's keys), so that opening the same home again opens the
// same store.
func openStoreAt(t testing.TB, home string, opts state.BoltOptions) contractStore {
	t.Helper()
	if onEtcd(t) {
		s, err := state.OpenEtcd(context.Background(), state.EtcdOptions{Client: etcdClient, Prefix: etcdPrefix(home), Home: home, Now: opts.Now})
		if err != nil {
			t.Fatalf("OpenEtcd(%s): %v", home, err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	s, err := state.OpenBolt(home, opts)
	if err != nil {
		t.Fatalf("OpenBolt(%s): %v", home, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func etcdPrefix(home string) string {
	return fmt.Sprintf("/test/%x/", sha256.Sum256([]byte(home)))
}

func typeMeta(k manifests.Kind) manifests.TypeMeta {
	return manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: k}
}

func deployment(name, creds string, bundles ...string) *manifests.Deployment {
	return &manifests.Deployment{
		TypeMeta: typeMeta(manifests.KindDeployment),
		Metadata: manifests.ObjectMeta{Name: name},
		Spec: manifests.DeploymentSpec{
			Image:       "ghcr.io/me/train:latest",
			Command:     []string{"python", "train.py"},
			Credentials: creds,
			Secrets:     bundles,
		},
	}
}

func bundle(name string) *manifests.SecretBundle {
	return &manifests.SecretBundle{
		TypeMeta: typeMeta(manifests.KindSecretBundle),
		Metadata: manifests.ObjectMeta{Name: name},
	}
}

func awsCredentials(name string) *manifests.Credentials {
	return &manifests.Credentials{
		TypeMeta: typeMeta(manifests.KindCredentials),
		Metadata: manifests.ObjectMeta{Name: name},
		Spec: manifests.CredentialsSpec{
			Provider: manifests.ProviderAWS,
			AWS:      &manifests.AWSCredentials{Region: "us-east-1", AccessKeyID: "AKIAEXAMPLE"},
		},
	}
}

func bundleWrite(name string, values map[string]string) state.Write {
	return state.Write{Object: bundle(name), Secrets: values}
}

func credentialsWrite(name, secretAccessKey string) state.Write {
	return state.Write{Object: awsCredentials(name), Secrets: map[string]string{"secretAccessKey": secretAccessKey}}
}

func apply(t testing.TB, s state.Store, writes ...state.Write) []state.ApplyResult {
	t.Helper()
	res, err := s.Apply(context.Background(), writes, state.ApplyOptions{})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

func applyObject(t testing.TB, s state.Store, o manifests.Object) state.ApplyResult {
	t.Helper()
	return apply(t, s, state.Write{Object: o})[0]
}

func get(t testing.TB, s state.Store, k manifests.Kind, name string) manifests.Object {
	t.Helper()
	o, err := s.Get(context.Background(), k, name)
	if err != nil {
		t.Fatalf("Get %s %q: %v", k, name, err)
	}
	return o
}

func getDeployment(t testing.TB, s state.Store, name string) *manifests.Deployment {
	t.Helper()
	return get(t, s, manifests.KindDeployment, name).(*manifests.Deployment)
}

func getBundle(t testing.TB, s state.Store, name string) *manifests.SecretBundle {
	t.Helper()
	return get(t, s, manifests.KindSecretBundle, name).(*manifests.SecretBundle)
}

// exists reports whether an object is stored, failing on errors other
// than ErrNotFound.
func exists(t testing.TB, s state.Store, k manifests.Kind, name string) bool {
	t.Helper()
	_, err := s.Get(context.Background(), k, name)
	switch {
	case err == nil:
		return true
	case isNotFound(err):
		return false
	}
	t.Fatalf("Get %s %q: %v", k, name, err)
	return false
}

// names lists the names of objects, in order.
func names(objs []manifests.Object) []string {
	out := []string{}
	for _, o := range objs {
		out = append(out, o.GetMeta().Name)
	}
	return out
}

func listNames(t testing.TB, s state.Store, k manifests.Kind) []string {
	t.Helper()
	objs, _, err := s.List(context.Background(), k)
	if err != nil {
		t.Fatalf("List %s: %v", k, err)
	}
	return names(objs)
}

func listRV(t testing.TB, s state.Store) string {
	t.Helper()
	_, rv, err := s.List(context.Background(), manifests.KindDeployment)
	if err != nil {
		t.Fatal(err)
	}
	return rv
}

// diff reports the difference between want and got as (-want +got), or
// "" when they are equal.
func diff(want, got any) string {
	if d := cmp.Diff(want, got); d != "" {
		return " (-want +got):\n" + d
	}
	return ""
}

func isNotFound(err error) bool { return errors.Is(err, state.ErrNotFound) }

func sortedKeys(m map[string]string) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// openBolt opens a fresh bbolt store, for the tests of what only bbolt
// does (its file, backups, key rotation).
func openBolt(t testing.TB) (*state.Bolt, string) {
	t.Helper()
	home := t.TempDir()
	return openBoltAt(t, home, state.BoltOptions{}), home
}

func openBoltAt(t testing.TB, home string, opts state.BoltOptions) *state.Bolt {
	t.Helper()
	s, err := state.OpenBolt(home, opts)
	if err != nil {
		t.Fatalf("OpenBolt(%s): %v", home, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}
