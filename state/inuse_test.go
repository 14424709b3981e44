package state_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// referenced describes, for one kind that deployments name, how to make an
// object of it and a deployment that names (or no longer names) it.
type referenced struct {
	kind manifests.Kind
	// write makes the object.
	write func(name string) state.Write
	// user is a deployment that names the object.
	user func(deployment, name string) *manifests.Deployment
	// nonUser is the same deployment no longer naming it.
	nonUser func(deployment string) *manifests.Deployment
}

var referencedKinds = []referenced{
	{
		kind:    manifests.KindSecretBundle,
		write:   func(name string) state.Write { return bundleWrite(name, map[string]string{"HF_TOKEN": "v"}) },
		user:    func(d, name string) *manifests.Deployment { return deployment(d, manifests.LocalCredentials, name) },
		nonUser: func(d string) *manifests.Deployment { return deployment(d, manifests.LocalCredentials) },
	},
	{
		kind:    manifests.KindCredentials,
		write:   func(name string) state.Write { return credentialsWrite(name, "secret") },
		user:    func(d, name string) *manifests.Deployment { return deployment(d, name) },
		nonUser: func(d string) *manifests.Deployment { return deployment(d, manifests.LocalCredentials) },
	},
}

// setupUsers stores object x of kind r and the deployments users naming
// it, plus a deployment "bystander" that does not. It returns the users'
// references as Users should list them.
func setupUsers(t *testing.T, s state.Store, r referenced, users ...string) []manifests.ObjectRef {
	t.Helper()
	writes := []state.Write{r.write("x"), {Object: r.nonUser("bystander")}}
	for _, u := range users {
		writes = append(writes, state.Write{Object: r.user(u, "x")})
	}
	apply(t, s, writes...)
	var refs []manifests.ObjectRef
	for _, u := range users {
		refs = append(refs, manifests.ObjectRef{Kind: manifests.KindDeployment, Name: u, UID: getDeployment(t, s, u).Metadata.UID})
	}
	return refs
}

// usedBy is the users shown of o: state.ShowUsers over the store's index.
func usedBy(t *testing.T, s state.Store, o manifests.Object) []manifests.ObjectRef {
	t.Helper()
	if err := state.ShowUsers(context.Background(), s, o); err != nil {
		t.Fatal(err)
	}
	switch o := o.(type) {
	case *manifests.SecretBundle:
		return o.Status.UsedBy
	case *manifests.Credentials:
		return o.Status.UsedBy
	}
	return nil
}

func phase(o manifests.Object) string {
	switch o := o.(type) {
	case *manifests.SecretBundle:
		return o.Status.Phase
	case *manifests.Credentials:
		return o.Status.Phase
	}
	return ""
}

func TestDeleteInUseObjectIsRefused(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		for _, r := range referencedKinds {
			t.Run(string(r.kind), func(t *testing.T) {
				s, _ := openStore(t)
				ctx := context.Background()
				want := setupUsers(t, s, r, "train", "eval")
				// Users are listed by name.
				want[0], want[1] = want[1], want[0]

				users, err := s.Users(ctx, r.kind, "x")
				if err != nil {
					t.Fatal(err)
				}
				if df := diff(want, users); df != "" {
					t.Errorf("Users:%s", df)
				}
				if df := diff(want, usedBy(t, s, get(t, s, r.kind, "x"))); df != "" {
					t.Errorf("status.usedBy:%s", df)
				}

				_, err = s.Delete(ctx, r.kind, "x", state.DeleteOptions{})
				if !errors.Is(err, state.ErrInUse) {
					t.Fatalf("Delete error = %v, want ErrInUse", err)
				}
				var inUse *state.InUseError
				if !errors.As(err, &inUse) {
					t.Fatalf("Delete error %T is not an *InUseError", err)
				}
				if inUse.Ref.Kind != r.kind || inUse.Ref.Name != "x" {
					t.Errorf("InUseError.Ref = %+v, want %s x", inUse.Ref, r.kind)
				}
				if df := diff(want, inUse.Users); df != "" {
					t.Errorf("InUseError.Users:%s", df)
				}
				for _, u := range want {
					if msg := err.Error(); !strings.Contains(msg, u.Name) || !strings.Contains(msg, u.UID) {
						t.Errorf("error %q does not name blocking deployment %s (uid %s)", msg, u.Name, u.UID)
					}
				}
				if strings.Contains(err.Error(), "bystander") {
					t.Errorf("error %q names a deployment that does not use the object", err)
				}

				o := get(t, s, r.kind, "x")
				if o.GetMeta().DeletionTimestamp != nil || o.GetMeta().Finalizers != nil || phase(o) != manifests.PhaseActive {
					t.Errorf("refused delete marked the object: %+v", o.GetMeta())
				}
				if _, _, err := s.OpenSecrets(ctx, r.kind, "x"); err != nil {
					t.Errorf("values lost after a refused delete: %v", err)
				}
			})
		}
	})
}

// TestForceDeleteRemovesInUseBundle: a bundle goes at once, and the
// result names the deployments left without it. (Credentials in use are
// kept: TestForcedDeleteOfCredentialsInUseWaitsForTheirUsers.)
func TestForceDeleteRemovesInUseBundle(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		for _, r := range referencedKinds[:1] {
			t.Run(string(r.kind), func(t *testing.T) {
				s, _ := openStore(t)
				ctx := context.Background()
				want := setupUsers(t, s, r, "train")
				res, err := s.Delete(ctx, r.kind, "x", state.DeleteOptions{Force: true})
				if err != nil {
					t.Fatal(err)
				}
				if !res.Deleted {
					t.Errorf("Force delete kept the object")
				}
				if df := diff(want, res.Users); df != "" {
					t.Errorf("the users left without it:%s", df)
				}
				if exists(t, s, r.kind, "x") {
					t.Errorf("object still stored after a forced delete")
				}
				if _, _, err := s.OpenSecrets(ctx, r.kind, "x"); !isNotFound(err) {
					t.Errorf("OpenSecrets after a forced delete: error = %v, want ErrNotFound", err)
				}
				if !exists(t, s, manifests.KindDeployment, "train") {
					t.Errorf("forced delete removed the deployment that uses the object")
				}
				// The deployment still names the object: made again, it is in
				// use again, and its old values are gone.
				apply(t, s, r.write("x"))
				if df := diff(want, usedBy(t, s, get(t, s, r.kind, "x"))); df != "" {
					t.Errorf("usedBy of the re-made object:%s", df)
				}
			})
		}
	})
}

func TestDeleteOfUnusedObjectRemovesIt(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		for _, r := range referencedKinds {
			for _, opts := range []state.DeleteOptions{{}, {Declarative: true}} {
				t.Run(fmt.Sprintf("%s/declarative=%v", r.kind, opts.Declarative), func(t *testing.T) {
					s, _ := openStore(t)
					setupUsers(t, s, r)
					res, err := s.Delete(context.Background(), r.kind, "x", opts)
					if err != nil {
						t.Fatal(err)
					}
					if !res.Deleted || exists(t, s, r.kind, "x") {
						t.Errorf("Delete(%+v) of an unused object = %+v, want it removed", opts, res)
					}
				})
			}
		}
	})
}

// watchAll watches every kind; the returned function drains what has been
// published so far.
func watchAll(t *testing.T, s state.Store) func() []state.WatchEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var chans []<-chan state.WatchEvent
	for _, k := range manifests.Kinds {
		_, ch, err := s.Watch(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		chans = append(chans, ch)
	}
	return func() []state.WatchEvent {
		var out []state.WatchEvent
		for _, ch := range chans {
			for more := true; more; {
				select {
				case ev, ok := <-ch:
					if !ok {
						more = false
						break
					}
					out = append(out, ev)
				default:
					more = false
				}
			}
		}
		return out
	}
}

func deletedRV(events []state.WatchEvent, k manifests.Kind, name string) string {
	for _, ev := range events {
		if ev.Type == state.Deleted && ev.Object.GetKind() == k && ev.Object.GetMeta().Name == name {
			return ev.Object.GetMeta().ResourceVersion
		}
	}
	return ""
}

func TestDeclarativeDeleteWaitsForTheLastUser(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		for _, r := range referencedKinds {
			t.Run(string(r.kind), func(t *testing.T) {
				clk := newClock()
				s := openStoreAt(t, t.TempDir(), state.BoltOptions{Now: clk.Now})
				ctx := context.Background()
				setupUsers(t, s, r, "train", "eval")
				events := watchAll(t, s)

				res, err := s.Delete(ctx, r.kind, "x", state.DeleteOptions{Declarative: true})
				if err != nil {
					t.Fatal(err)
				}
				if res.Deleted {
					t.Fatalf("declarative delete of an object in use removed it")
				}
				o := get(t, s, r.kind, "x")
				m := o.GetMeta()
				if m.DeletionTimestamp == nil || !m.DeletionTimestamp.Equal(clk.Now()) {
					t.Errorf("deletionTimestamp = %v, want %v", m.DeletionTimestamp, clk.Now())
				}
				if df := diff([]string{manifests.FinalizerInUse}, m.Finalizers); df != "" {
					t.Errorf("finalizers:%s", df)
				}
				if phase(o) != manifests.PhaseTerminating {
					t.Errorf("phase = %q, want %q", phase(o), manifests.PhaseTerminating)
				}
				// Deleting it again the same way changes nothing.
				if _, err := s.Delete(ctx, r.kind, "x", state.DeleteOptions{Declarative: true}); err != nil {
					t.Fatal(err)
				}
				if df := diff([]string{manifests.FinalizerInUse}, get(t, s, r.kind, "x").GetMeta().Finalizers); df != "" {
					t.Errorf("finalizers after a second delete:%s", df)
				}
				// A terminating object is not overwritten by apply.
				if _, err := s.Apply(ctx, []state.Write{r.write("x")}, state.ApplyOptions{}); !errors.Is(err, state.ErrTerminating) {
					t.Errorf("apply onto the terminating object: error = %v, want ErrTerminating", err)
				}

				// One user of two goes: still held.
				if _, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				if !exists(t, s, r.kind, "x") {
					t.Fatalf("object removed while deployment eval still names it")
				}
				if _, _, err := s.OpenSecrets(ctx, r.kind, "x"); err != nil {
					t.Errorf("values of the terminating object: %v", err)
				}

				// The last user goes: the object goes in the same transaction.
				events()
				if _, err := s.Delete(ctx, manifests.KindDeployment, "eval", state.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				if exists(t, s, r.kind, "x") {
					t.Fatalf("object still stored after its last user was deleted")
				}
				if _, _, err := s.OpenSecrets(ctx, r.kind, "x"); !isNotFound(err) {
					t.Errorf("OpenSecrets after release: error = %v, want ErrNotFound", err)
				}
				// etcd's watch delivers after the write returns: wait for both.
				var evs []state.WatchEvent
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
					evs = append(evs, events()...)
					if deletedRV(evs, manifests.KindDeployment, "eval") != "" && deletedRV(evs, r.kind, "x") != "" {
						break
					}
					time.Sleep(5 * time.Millisecond)
				}
				dRV, xRV := deletedRV(evs, manifests.KindDeployment, "eval"), deletedRV(evs, r.kind, "x")
				if dRV == "" || dRV != xRV {
					t.Errorf("deployment deleted at resourceVersion %q, object at %q: want both in one transaction", dRV, xRV)
				}
			})
		}
	})
}

func TestDeclarativeDeleteIsReleasedWhenTheUserStopsNamingIt(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		for _, r := range referencedKinds {
			for _, via := range []string{"apply", "update"} {
				t.Run(string(r.kind)+"/"+via, func(t *testing.T) {
					s, _ := openStore(t)
					ctx := context.Background()
					setupUsers(t, s, r, "train")
					if _, err := s.Delete(ctx, r.kind, "x", state.DeleteOptions{Declarative: true}); err != nil {
						t.Fatal(err)
					}
					// A labels-only change keeps naming it.
					d := getDeployment(t, s, "train")
					d.Metadata.Labels = map[string]string{"a": "b"}
					if _, err := s.Update(ctx, d); err != nil {
						t.Fatal(err)
					}
					if !exists(t, s, r.kind, "x") {
						t.Fatalf("object released by a change that still names it")
					}

					switch via {
					case "apply":
						applyObject(t, s, r.nonUser("train"))
					case "update":
						d := getDeployment(t, s, "train")
						d.Spec = r.nonUser("train").Spec
						if _, err := s.Update(ctx, d); err != nil {
							t.Fatal(err)
						}
					}
					if exists(t, s, r.kind, "x") {
						t.Errorf("object still stored after its only user stopped naming it")
					}
					if users, _ := s.Users(ctx, r.kind, "x"); len(users) != 0 {
						t.Errorf("Users = %v, want none", users)
					}
				})
			}
		}
	})
}

func TestDeclarativeDeleteWaitsForTheUsersVMFinalizer(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		for _, r := range referencedKinds {
			t.Run(string(r.kind), func(t *testing.T) {
				s, _ := openStore(t)
				ctx := context.Background()
				setupUsers(t, s, r, "train")
				d := getDeployment(t, s, "train")
				d.Metadata.AddFinalizer(manifests.FinalizerVM)
				if _, err := s.Update(ctx, d); err != nil {
					t.Fatal(err)
				}
				// Both deleted from the manifest directory in one go.
				if _, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{Declarative: true}); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Delete(ctx, r.kind, "x", state.DeleteOptions{Declarative: true}); err != nil {
					t.Fatal(err)
				}
				if !exists(t, s, r.kind, "x") {
					t.Fatalf("object removed while its user still terminates its VM")
				}
				// The VM is gone; the controller releases the deployment.
				d = getDeployment(t, s, "train")
				d.Metadata.RemoveFinalizer(manifests.FinalizerVM)
				if _, err := s.Update(ctx, d); err != nil {
					t.Fatal(err)
				}
				if exists(t, s, manifests.KindDeployment, "train") || exists(t, s, r.kind, "x") {
					t.Errorf("deployment or object still stored after the VM finalizer was released")
				}
			})
		}
	})
}

// A deployment whose deletion has finished terminating its VM is terminal
// (DESIGN §4) even while a finalizer of someone else still keeps it stored:
// it no longer holds the objects it names.
func TestTerminalDeploymentNoLongerHoldsWhatItNames(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		const other = "example.com/audit"
		for _, r := range referencedKinds {
			t.Run(string(r.kind), func(t *testing.T) {
				s, _ := openStore(t)
				ctx := context.Background()
				setupUsers(t, s, r, "train", "eval")
				for _, name := range []string{"train", "eval"} {
					d := getDeployment(t, s, name)
					d.Metadata.Finalizers = []string{manifests.FinalizerVM, other}
					if _, err := s.Update(ctx, d); err != nil {
						t.Fatal(err)
					}
				}
				// eval: deleted, VM terminated, another finalizer remains.
				if _, err := s.Delete(ctx, manifests.KindDeployment, "eval", state.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				d := getDeployment(t, s, "eval")
				d.Metadata.RemoveFinalizer(manifests.FinalizerVM)
				if _, err := s.Update(ctx, d); err != nil {
					t.Fatal(err)
				}
				if !getDeployment(t, s, "eval").Terminal() {
					t.Fatal("eval is not terminal")
				}
				// train: deleted, still terminating its VM.
				if _, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}

				users, err := s.Users(ctx, r.kind, "x")
				if err != nil {
					t.Fatal(err)
				}
				want := []manifests.ObjectRef{{Kind: manifests.KindDeployment, Name: "train", UID: getDeployment(t, s, "train").Metadata.UID}}
				if df := diff(want, users); df != "" {
					t.Errorf("Users (the terminal deployment must not count):%s", df)
				}
				var inUse *state.InUseError
				if _, err := s.Delete(ctx, r.kind, "x", state.DeleteOptions{}); !errors.As(err, &inUse) || diff(want, inUse.Users) != "" {
					t.Errorf("Delete error = %v, want in use by train only", err)
				}
				if _, err := s.Delete(ctx, r.kind, "x", state.DeleteOptions{Declarative: true}); err != nil {
					t.Fatal(err)
				}

				// train finishes terminating its VM: x goes, though both
				// deployments are still stored.
				d = getDeployment(t, s, "train")
				d.Metadata.RemoveFinalizer(manifests.FinalizerVM)
				if _, err := s.Update(ctx, d); err != nil {
					t.Fatal(err)
				}
				if exists(t, s, r.kind, "x") {
					t.Errorf("object still stored after every user became terminal")
				}
				// Neither deployment was removed by the release.
				if got := listNames(t, s, manifests.KindDeployment); diff([]string{"bystander", "eval", "train"}, got) != "" {
					t.Errorf("deployments = %v", got)
				}
			})
		}
	})
}
