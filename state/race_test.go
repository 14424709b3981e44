package state_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

const raceIterations = 200

// concurrently runs a and b at the same moment and waits for both.
func concurrently(a, b func()) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); <-start; a() }()
	go func() { defer wg.Done(); <-start; b() }()
	close(start)
	wg.Wait()
}

// TestDeleteNeverRacesAConcurrentApply races, many times, an apply of a
// Deployment naming bundle X against a plain delete of X. The check that X
// is unused and the removal must be one transaction with respect to the
// apply: either the delete is refused, naming the deployment, or it
// committed before the deployment was written. It must never remove X
// after a deployment naming it was committed.
func TestDeleteNeverRacesAConcurrentApply(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		_, bundleEvents, err := s.Watch(ctx, manifests.KindSecretBundle)
		if err != nil {
			t.Fatal(err)
		}
		// deletedAt maps bundle name → resourceVersion of its deletion.
		deletedAt := map[string]uint64{}
		nextDeleted := func(name string) uint64 {
			for {
				if rv, ok := deletedAt[name]; ok {
					return rv
				}
				ev, ok := <-bundleEvents
				if !ok {
					t.Fatal("bundle watch closed")
				}
				if ev.Type == state.Deleted {
					deletedAt[ev.Object.GetMeta().Name] = mustRV(t, ev.Object)
				}
			}
		}

		var refused, deletedFirst int
		for i := range raceIterations {
			x, d := fmt.Sprintf("x-%d", i), fmt.Sprintf("d-%d", i)
			apply(t, s, bundleWrite(x, map[string]string{"K": "v"}))

			var applyErr, deleteErr error
			var delRes state.DeleteResult
			concurrently(
				func() {
					_, applyErr = s.Apply(ctx, []state.Write{{Object: deployment(d, manifests.LocalCredentials, x)}}, state.ApplyOptions{})
				},
				func() {
					delRes, deleteErr = s.Delete(ctx, manifests.KindSecretBundle, x, state.DeleteOptions{})
				},
			)
			if applyErr != nil {
				t.Fatalf("iteration %d: apply: %v", i, applyErr)
			}
			dep := getDeployment(t, s, d)
			if !slices.Contains(dep.Spec.Secrets, x) {
				t.Fatalf("iteration %d: deployment does not name %s", i, x)
			}

			var inUse *state.InUseError
			switch {
			case errors.As(deleteErr, &inUse):
				refused++
				want := []manifests.ObjectRef{{Kind: manifests.KindDeployment, Name: d, UID: dep.Metadata.UID}}
				if df := diff(want, inUse.Users); df != "" {
					t.Fatalf("iteration %d: InUseError.Users:%s", i, df)
				}
				if !exists(t, s, manifests.KindSecretBundle, x) {
					t.Fatalf("iteration %d: delete refused but bundle %s is gone", i, x)
				}
			case deleteErr != nil:
				t.Fatalf("iteration %d: delete: %v", i, deleteErr)
			default:
				deletedFirst++
				if !delRes.Deleted || exists(t, s, manifests.KindSecretBundle, x) {
					t.Fatalf("iteration %d: delete succeeded but bundle %s is still stored", i, x)
				}
				// X is gone while the deployment names it: allowed only if the
				// deployment was written after X was deleted.
				if del, wrote := nextDeleted(x), mustRV(t, dep); wrote < del {
					t.Fatalf("iteration %d: bundle %s deleted at resourceVersion %d although deployment %s naming it was committed at %d",
						i, x, del, d, wrote)
				}
			}
			users, err := s.Users(ctx, manifests.KindSecretBundle, x)
			if err != nil || len(users) != 1 || users[0].Name != d {
				t.Fatalf("iteration %d: Users(%s) = %v, %v; want [%s]", i, x, users, err, d)
			}
		}
		t.Logf("%d iterations: delete refused %d times, committed first %d times", raceIterations, refused, deletedFirst)
	})
}

// TestCredentialsDeleteNeverRacesAConcurrentApply is the same race for
// credentials, where RequireReferences makes the end state itself the
// invariant: never a deployment naming credentials that are gone.
func TestCredentialsDeleteNeverRacesAConcurrentApply(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx := context.Background()
		var refused, deletedFirst int
		for i := range raceIterations {
			c, d := fmt.Sprintf("c-%d", i), fmt.Sprintf("d-%d", i)
			apply(t, s, credentialsWrite(c, "secret"))

			var applyErr, deleteErr error
			concurrently(
				func() {
					_, applyErr = s.Apply(ctx, []state.Write{{Object: deployment(d, c)}}, state.ApplyOptions{RequireReferences: true})
				},
				func() {
					_, deleteErr = s.Delete(ctx, manifests.KindCredentials, c, state.DeleteOptions{})
				},
			)
			switch {
			case applyErr == nil && errors.Is(deleteErr, state.ErrInUse):
				refused++
			case errors.Is(applyErr, state.ErrInvalid) && deleteErr == nil:
				deletedFirst++
			default:
				t.Fatalf("iteration %d: apply error %v, delete error %v: want exactly one to win", i, applyErr, deleteErr)
			}
			depExists, credExists := exists(t, s, manifests.KindDeployment, d), exists(t, s, manifests.KindCredentials, c)
			if depExists && !credExists {
				t.Fatalf("iteration %d: deployment %s exists and names credentials %s, which were deleted", i, d, c)
			}
			if depExists == (deleteErr == nil) {
				t.Fatalf("iteration %d: deployment exists = %v, credentials exist = %v, delete error %v", i, depExists, credExists, deleteErr)
			}
		}
		t.Logf("%d iterations: delete refused %d times, committed first %d times", raceIterations, refused, deletedFirst)
	})
}

// TestDeclarativeDeleteNeverStrandsABundle races a declarative delete of a
// bundle against the deletion of its only user. Whichever commits first,
// the bundle must be gone at the end, never left Terminating with no user
// to release it.
func TestDeclarativeDeleteNeverStrandsABundle(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx := context.Background()
		for i := range raceIterations {
			x, d := fmt.Sprintf("x-%d", i), fmt.Sprintf("d-%d", i)
			apply(t, s, bundleWrite(x, map[string]string{"K": "v"}), state.Write{Object: deployment(d, manifests.LocalCredentials, x)})

			var depErr, bundleErr error
			concurrently(
				func() {
					_, depErr = s.Delete(ctx, manifests.KindDeployment, d, state.DeleteOptions{Declarative: true})
				},
				func() {
					_, bundleErr = s.Delete(ctx, manifests.KindSecretBundle, x, state.DeleteOptions{Declarative: true})
				},
			)
			if depErr != nil || bundleErr != nil {
				t.Fatalf("iteration %d: delete deployment: %v; delete bundle: %v", i, depErr, bundleErr)
			}
			if exists(t, s, manifests.KindSecretBundle, x) {
				t.Fatalf("iteration %d: bundle %s stranded: %+v", i, x, getBundle(t, s, x).Metadata)
			}
		}
	})
}

func mustRV(t *testing.T, o manifests.Object) uint64 {
	t.Helper()
	rv, err := strconv.ParseUint(o.GetMeta().ResourceVersion, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q of %s: %v", o.GetMeta().ResourceVersion, o.GetMeta().Name, err)
	}
	return rv
}
