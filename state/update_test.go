package state_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

func TestStaleWritesConflict(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		tests := []struct {
			name  string
			write func(s state.Store, stale *manifests.Deployment) error
		}{
			{"Update with a stale resourceVersion", func(s state.Store, stale *manifests.Deployment) error {
				stale.Spec.Image = "other"
				_, err := s.Update(context.Background(), stale)
				return err
			}},
			{"UpdateStatus with a stale resourceVersion", func(s state.Store, stale *manifests.Deployment) error {
				stale.Status.Phase = manifests.PhaseRunning
				_, err := s.UpdateStatus(context.Background(), stale)
				return err
			}},
			{"Update with an empty resourceVersion", func(s state.Store, stale *manifests.Deployment) error {
				stale.Metadata.ResourceVersion = ""
				_, err := s.Update(context.Background(), stale)
				return err
			}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				s, _ := openStore(t)
				applyObject(t, s, deployment("train", manifests.LocalCredentials))
				stale := getDeployment(t, s, "train")
				// Someone else writes in between.
				fresh := getDeployment(t, s, "train")
				fresh.Metadata.Labels = map[string]string{"by": "other"}
				if _, err := s.Update(context.Background(), fresh); err != nil {
					t.Fatal(err)
				}
				current := getDeployment(t, s, "train")

				if err := tc.write(s, stale); !errors.Is(err, state.ErrConflict) {
					t.Fatalf("error = %v, want ErrConflict", err)
				}
				after := getDeployment(t, s, "train")
				if after.Metadata.ResourceVersion != current.Metadata.ResourceVersion || after.Spec.Image != current.Spec.Image || after.Status.Phase != current.Status.Phase {
					t.Errorf("a refused write changed the object")
				}
			})
		}
	})
}

func TestWritesNamingAnotherUIDConflict(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx := context.Background()
		applyObject(t, s, deployment("train", manifests.LocalCredentials))
		d := getDeployment(t, s, "train")
		d.Metadata.UID = "00000000-0000-4000-8000-000000000000"
		if _, err := s.Update(ctx, d); !errors.Is(err, state.ErrConflict) {
			t.Errorf("Update with another uid: error = %v, want ErrConflict", err)
		}
		if _, err := s.UpdateStatus(ctx, d); !errors.Is(err, state.ErrConflict) {
			t.Errorf("UpdateStatus with another uid: error = %v, want ErrConflict", err)
		}
		if _, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{UID: d.Metadata.UID}); !errors.Is(err, state.ErrConflict) {
			t.Errorf("Delete with another uid: error = %v, want ErrConflict", err)
		}
		if !exists(t, s, manifests.KindDeployment, "train") {
			t.Errorf("deployment deleted by a Delete naming another uid")
		}
	})
}

func TestUpdateOfMissingObjectIsNotFound(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx := context.Background()
		if _, err := s.Update(ctx, deployment("ghost", manifests.LocalCredentials)); !isNotFound(err) {
			t.Errorf("Update error = %v, want ErrNotFound", err)
		}
		if _, err := s.UpdateStatus(ctx, deployment("ghost", manifests.LocalCredentials)); !isNotFound(err) {
			t.Errorf("UpdateStatus error = %v, want ErrNotFound", err)
		}
		if _, err := s.Delete(ctx, manifests.KindDeployment, "ghost", state.DeleteOptions{}); !isNotFound(err) {
			t.Errorf("Delete error = %v, want ErrNotFound", err)
		}
	})
}

func TestUpdateWritesSpecAndMetadataButNotStatus(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx := context.Background()
		applyObject(t, s, deployment("train", manifests.LocalCredentials))
		d := getDeployment(t, s, "train")
		d.Metadata.Labels = map[string]string{"team": "ml"}
		d.Status.Phase = manifests.PhaseRunning
		out, err := s.Update(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		got := getDeployment(t, s, "train")
		if got.Metadata.Generation != 1 {
			t.Errorf("labels-only Update: generation = %d, want 1", got.Metadata.Generation)
		}
		if got.Status.Phase != manifests.PhasePending {
			t.Errorf("Update wrote status.phase %q", got.Status.Phase)
		}
		if out.GetMeta().ResourceVersion != got.Metadata.ResourceVersion || got.Metadata.ResourceVersion == d.Metadata.ResourceVersion {
			t.Errorf("Update returned resourceVersion %s, stored %s (was %s): want a new one, returned", out.GetMeta().ResourceVersion, got.Metadata.ResourceVersion, d.Metadata.ResourceVersion)
		}

		got.Spec.Image = "ghcr.io/me/train:v2"
		if _, err := s.Update(ctx, got); err != nil {
			t.Fatal(err)
		}
		if g := getDeployment(t, s, "train").Metadata.Generation; g != 2 {
			t.Errorf("spec Update: generation = %d, want 2", g)
		}
	})
}

func TestUpdateStatusWritesOnlyStatus(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		ctx := context.Background()
		applyObject(t, s, deployment("train", manifests.LocalCredentials))
		d := getDeployment(t, s, "train")
		d.Spec.Image = "ignored"
		d.Metadata.Labels = map[string]string{"ignored": "yes"}
		d.Metadata.Finalizers = []string{manifests.FinalizerVM}
		d.Status = manifests.DeploymentStatus{
			ObservedGeneration: 1,
			Phase:              manifests.PhaseRunning,
			Attempt:            1,
			VM:                 &manifests.VMStatus{ID: "i-123", Market: "spot", Attempt: 1, BundleVersions: map[string]int64{"hf": 3}},
		}
		if _, err := s.UpdateStatus(ctx, d); err != nil {
			t.Fatal(err)
		}
		got := getDeployment(t, s, "train")
		if df := diff(d.Status, got.Status); df != "" {
			t.Errorf("status:%s", df)
		}
		if got.Spec.Image != "ghcr.io/me/train:latest" || got.Metadata.Labels != nil || got.Metadata.Finalizers != nil || got.Metadata.Generation != 1 {
			t.Errorf("UpdateStatus changed more than the status: image %q labels %v finalizers %v generation %d",
				got.Spec.Image, got.Metadata.Labels, got.Metadata.Finalizers, got.Metadata.Generation)
		}
	})
}

func TestDeleteDeploymentWithFinalizerKeepsItTerminating(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		clk := newClock()
		s := openStoreAt(t, t.TempDir(), state.BoltOptions{Now: clk.Now})
		ctx := context.Background()
		applyObject(t, s, deployment("train", manifests.LocalCredentials))
		d := getDeployment(t, s, "train")
		d.Metadata.AddFinalizer(manifests.FinalizerVM)
		if _, err := s.Update(ctx, d); err != nil {
			t.Fatal(err)
		}

		res, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if res.Deleted {
			t.Errorf("Delete reported Deleted for an object held by a finalizer")
		}
		d = getDeployment(t, s, "train")
		deletedAt := clk.Now()
		if d.Metadata.DeletionTimestamp == nil || !d.Metadata.DeletionTimestamp.Equal(deletedAt) {
			t.Fatalf("deletionTimestamp = %v, want %v", d.Metadata.DeletionTimestamp, deletedAt)
		}
		if df := diff([]string{manifests.FinalizerVM}, d.Metadata.Finalizers); df != "" {
			t.Errorf("finalizers:%s", df)
		}

		// A second delete keeps the first timestamp.
		clk.Advance(time.Minute)
		if _, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		d = getDeployment(t, s, "train")
		if !d.Metadata.DeletionTimestamp.Equal(deletedAt) {
			t.Errorf("second delete moved deletionTimestamp to %v", d.Metadata.DeletionTimestamp)
		}

		// Status can still be written while terminating.
		d.Status.Phase = manifests.PhaseTerminating
		d2, err := s.UpdateStatus(ctx, d)
		if err != nil {
			t.Fatalf("UpdateStatus while terminating: %v", err)
		}

		// Releasing the last finalizer removes the object.
		d = d2.(*manifests.Deployment)
		d.Metadata.RemoveFinalizer(manifests.FinalizerVM)
		if _, err := s.Update(ctx, d); err != nil {
			t.Fatal(err)
		}
		if exists(t, s, manifests.KindDeployment, "train") {
			t.Errorf("deployment still stored after its last finalizer was removed")
		}
	})
}

func TestDeleteDeploymentWithoutFinalizersRemovesIt(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		s, _ := openStore(t)
		applyObject(t, s, deployment("train", manifests.LocalCredentials))
		res, err := s.Delete(context.Background(), manifests.KindDeployment, "train", state.DeleteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Deleted || res.Object == nil || res.Object.GetMeta().Name != "train" {
			t.Errorf("Delete = %+v, want Deleted with the object", res)
		}
		if exists(t, s, manifests.KindDeployment, "train") {
			t.Errorf("deployment still stored")
		}
		// The name can be used again, by a new object.
		res2 := applyObject(t, s, deployment("train", manifests.LocalCredentials))
		if res2.Action != state.ActionCreated || res2.Ref.UID == res.Object.GetMeta().UID {
			t.Errorf("re-create = %+v, want created with a new uid", res2)
		}
	})
}

func TestTerminatingObjectCannotChange(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		tests := []struct {
			name  string
			write func(s state.Store, d *manifests.Deployment) error
		}{
			{"spec change through Update", func(s state.Store, d *manifests.Deployment) error {
				d.Spec.Image = "ghcr.io/me/train:v2"
				_, err := s.Update(context.Background(), d)
				return err
			}},
			{"finalizer added through Update", func(s state.Store, d *manifests.Deployment) error {
				d.Metadata.AddFinalizer("example.com/other")
				_, err := s.Update(context.Background(), d)
				return err
			}},
			{"apply of a changed manifest", func(s state.Store, d *manifests.Deployment) error {
				in := deployment("train", manifests.LocalCredentials)
				in.Spec.Image = "ghcr.io/me/train:v2"
				_, err := s.Apply(context.Background(), []state.Write{{Object: in}}, state.ApplyOptions{})
				return err
			}},
			{"apply of the same manifest", func(s state.Store, d *manifests.Deployment) error {
				_, err := s.Apply(context.Background(), []state.Write{{Object: deployment("train", manifests.LocalCredentials)}}, state.ApplyOptions{})
				return err
			}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				s, _ := openStore(t)
				ctx := context.Background()
				applyObject(t, s, deployment("train", manifests.LocalCredentials))
				d := getDeployment(t, s, "train")
				d.Metadata.AddFinalizer(manifests.FinalizerVM)
				if _, err := s.Update(ctx, d); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{}); err != nil {
					t.Fatal(err)
				}
				before := getDeployment(t, s, "train")

				if err := tc.write(s, getDeployment(t, s, "train")); !errors.Is(err, state.ErrTerminating) {
					t.Fatalf("error = %v, want ErrTerminating", err)
				}
				after := getDeployment(t, s, "train")
				if df := diff(before, after); df != "" {
					t.Errorf("refused write changed the object:%s", df)
				}
			})
		}
	})
}

func TestLocalCredentialsAreBuiltIn(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		home := t.TempDir()
		s := openStoreAt(t, home, state.BoltOptions{})
		ctx := context.Background()
		c, ok := get(t, s, manifests.KindCredentials, manifests.LocalCredentials).(*manifests.Credentials)
		if !ok || c.Spec.Provider != manifests.ProviderLocal || c.Metadata.UID == "" || c.Metadata.Generation != 1 {
			t.Fatalf("local credentials = %+v, want provider local with uid and generation 1", c)
		}

		overwrite := &manifests.Credentials{
			TypeMeta: typeMeta(manifests.KindCredentials),
			Metadata: manifests.ObjectMeta{Name: manifests.LocalCredentials},
			Spec:     manifests.CredentialsSpec{Provider: manifests.ProviderAWS, AWS: &manifests.AWSCredentials{Region: "us-east-1"}},
		}
		if _, err := s.Apply(ctx, []state.Write{{Object: overwrite}}, state.ApplyOptions{}); !errors.Is(err, state.ErrProtected) {
			t.Errorf("Apply over local: error = %v, want ErrProtected", err)
		}
		for _, opts := range []state.DeleteOptions{{}, {Force: true}, {Declarative: true}} {
			if _, err := s.Delete(ctx, manifests.KindCredentials, manifests.LocalCredentials, opts); !errors.Is(err, state.ErrProtected) {
				t.Errorf("Delete(local, %+v): error = %v, want ErrProtected", opts, err)
			}
		}
		cur := get(t, s, manifests.KindCredentials, manifests.LocalCredentials).(*manifests.Credentials)
		cur.Spec = overwrite.Spec
		if _, err := s.Update(ctx, cur); !errors.Is(err, state.ErrProtected) {
			t.Errorf("Update of local's spec: error = %v, want ErrProtected", err)
		}

		after := get(t, s, manifests.KindCredentials, manifests.LocalCredentials).(*manifests.Credentials)
		if df := diff(c, after); df != "" {
			t.Errorf("local credentials changed:%s", df)
		}

		// Reopening keeps the same object rather than making another.
		s.Close()
		s2 := openStoreAt(t, home, state.BoltOptions{})
		again := get(t, s2, manifests.KindCredentials, manifests.LocalCredentials)
		if again.GetMeta().UID != c.Metadata.UID {
			t.Errorf("local credentials uid %s → %s after reopening", c.Metadata.UID, again.GetMeta().UID)
		}
	})
}
