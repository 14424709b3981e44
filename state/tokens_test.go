package state_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/anycloud/anycloud/state"
)

// A user's token authenticates it until the user is removed, then never
// again; the store keeps only the token's hash, and lists no token.
func TestAPIUserTokensWorkUntilRemoved(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, home := openStore(t)
		u := s.(state.APIUsers)
		ctx := context.Background()
		token, err := u.AddAPIUser(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(token, state.TokenPrefix) || len(token) < 40 {
			t.Fatalf("token %d characters, want a long %s… token", len(token), state.TokenPrefix)
		}
		if _, err := u.AddAPIUser(ctx, "alice"); !errors.Is(err, state.ErrConflict) {
			t.Errorf("second add of alice: %v, want ErrConflict", err)
		}
		bob, err := u.AddAPIUser(ctx, "bob")
		if err != nil {
			t.Fatal(err)
		}
		if who, err := u.Authenticate(ctx, token); err != nil || who != "alice" {
			t.Fatalf("Authenticate(alice's token) = %q, %v", who, err)
		}
		for _, bad := range []string{"", "acp_nope", token + "x", strings.TrimPrefix(token, state.TokenPrefix)} {
			if _, err := u.Authenticate(ctx, bad); !errors.Is(err, state.ErrUnauthorized) {
				t.Errorf("Authenticate(a wrong token) = %v, want ErrUnauthorized", err)
			}
		}
		users, err := u.ListAPIUsers(ctx)
		if err != nil || len(users) != 2 || users[0].Name != "alice" || users[1].Name != "bob" {
			t.Fatalf("ListAPIUsers = %v, %v", users, err)
		}
		if err := u.RemoveAPIUser(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Authenticate(ctx, token); !errors.Is(err, state.ErrUnauthorized) {
			t.Errorf("Authenticate after removal = %v, want ErrUnauthorized at once", err)
		}
		if who, err := u.Authenticate(ctx, bob); err != nil || who != "bob" {
			t.Errorf("bob's token after alice's removal = %q, %v", who, err)
		}
		if err := u.RemoveAPIUser(ctx, "alice"); !errors.Is(err, state.ErrNotFound) {
			t.Errorf("second removal: %v, want ErrNotFound", err)
		}
		// What the store holds never has a token in it.
		var raw []byte
		if onEtcd(t) {
			resp, err := etcdClient.Get(ctx, etcdPrefix(home), clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range resp.Kvs {
				raw = append(append(raw, kv.Key...), kv.Value...)
			}
		} else {
			s.Close()
			if raw, err = os.ReadFile(filepath.Join(home, state.DBFile)); err != nil {
				t.Fatal(err)
			}
		}
		assertNoSecret(t, "the store", raw, token, bob, strings.TrimPrefix(bob, state.TokenPrefix))
	})
}
