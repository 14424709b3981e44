package state_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/state"
)

// launched gives deployment d (applied) the VM finalizer and a recorded
// VM, as the controller would.
func launched(t *testing.T, s state.Store, name, vmID string) {
	t.Helper()
	ctx := context.Background()
	d := get(t, s, manifests.KindDeployment, name).(*manifests.Deployment)
	d.Metadata.AddFinalizer(manifests.FinalizerVM)
	o, err := s.Update(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	d = o.(*manifests.Deployment)
	d.Status.Attempt = 1
	d.Status.VM = &manifests.VMStatus{ID: vmID, Attempt: 1, Scope: "aws/us-east-1/x"}
	if _, err := s.UpdateStatus(ctx, d); err != nil {
		t.Fatal(err)
	}
}

// TestForcedDeleteOfCredentialsInUseWaitsForTheirUsers: the credentials
// are the only way to terminate their users' VMs. Forced, they are kept
// Terminating (no new user can name them) until the last user is gone,
// instead of leaving `delete deploy` to report a deployment gone whose VM
// nothing can reach.
func TestForcedDeleteOfCredentialsInUseWaitsForTheirUsers(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		s, _ := openStore(t)
		apply(t, s, credentialsWrite("aws1", "secret"), state.Write{Object: deployment("train", "aws1")})
		launched(t, s, "train", "i-1")
		res, err := s.Delete(ctx, manifests.KindCredentials, "aws1", state.DeleteOptions{Force: true})
		if err != nil {
			t.Fatal(err)
		}
		if res.Deleted || len(res.Users) != 1 || res.Users[0].Name != "train" {
			t.Fatalf("forced delete in use: deleted=%v users=%v, want kept and train named", res.Deleted, res.Users)
		}
		c := get(t, s, manifests.KindCredentials, "aws1").(*manifests.Credentials)
		if len(c.Status.LeftoverVMs) != 0 {
			t.Fatalf("a plain read of credentials filled leftoverVMs %+v: reads on the control loop's path must not scan", c.Status.LeftoverVMs)
		}
		if err := state.ShowUsers(context.Background(), s, c); err != nil {
			t.Fatal(err)
		}
		if c.Metadata.DeletionTimestamp == nil || c.Status.Phase != manifests.PhaseTerminating {
			t.Errorf("credentials not Terminating: %+v", c.Metadata)
		}
		if _, _, err := s.OpenSecrets(ctx, manifests.KindCredentials, "aws1"); err != nil {
			t.Errorf("the secret key is gone while a user needs it: %v", err)
		}
		if _, err := s.Apply(ctx, []state.Write{{Object: deployment("new", "aws1")}}, state.ApplyOptions{RequireReferences: true}); !errors.Is(err, state.ErrInvalid) {
			t.Errorf("a new deployment could name terminating credentials: %v", err)
		}
		// The deployment's deletion finishes (the controller terminates the VM
		// with the credentials, then drops its finalizer): the credentials go.
		if _, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		d := get(t, s, manifests.KindDeployment, "train")
		d.GetMeta().RemoveFinalizer(manifests.FinalizerVM)
		if _, err := s.Update(ctx, d); err != nil {
			t.Fatal(err)
		}
		if exists(t, s, manifests.KindCredentials, "aws1") {
			t.Error("credentials still stored after their last user went")
		}
	})
}

// TestForcedDeleteOfADeploymentRecordsItsVMOnItsCredentials: the
// deployment is gone at once; its VM is recorded as a leftover on its
// credentials, which then cannot go until the orphan sweep has ended it
// (or the user forces that too).
func TestForcedDeleteOfADeploymentRecordsItsVMOnItsCredentials(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		s, _ := openStore(t)
		apply(t, s, credentialsWrite("aws1", "secret"), state.Write{Object: deployment("train", "aws1")})
		launched(t, s, "train", "i-1")
		uid := get(t, s, manifests.KindDeployment, "train").GetMeta().UID
		res, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{Force: true})
		if err != nil {
			t.Fatal(err)
		}
		if !res.Deleted || exists(t, s, manifests.KindDeployment, "train") {
			t.Fatal("the forced delete did not remove the deployment")
		}
		if l := res.Leftover; l == nil || l.VMID != "i-1" || l.UID != uid || l.Deployment != "train" || l.Scope != "aws/us-east-1/x" {
			t.Fatalf("leftover %+v", res.Leftover)
		}
		c := get(t, s, manifests.KindCredentials, "aws1").(*manifests.Credentials)
		if len(c.Status.LeftoverVMs) != 0 {
			t.Fatalf("a plain read of credentials filled leftoverVMs %+v: reads on the control loop's path must not scan", c.Status.LeftoverVMs)
		}
		if err := state.ShowUsers(context.Background(), s, c); err != nil {
			t.Fatal(err)
		}
		if len(c.Status.LeftoverVMs) != 1 || c.Status.LeftoverVMs[0].VMID != "i-1" {
			t.Fatalf("credentials status leftoverVMs = %+v", c.Status.LeftoverVMs)
		}
		// By name: refused (409), naming the VM.
		_, err = s.Delete(ctx, manifests.KindCredentials, "aws1", state.DeleteOptions{})
		var le *state.LeftoverError
		if !errors.As(err, &le) || !errors.Is(err, state.ErrInUse) || !strings.Contains(err.Error(), "i-1") {
			t.Fatalf("delete of the credentials: %v, want a LeftoverError naming i-1", err)
		}
		// Declaratively: kept until the sweep releases the leftover.
		if res, err := s.Delete(ctx, manifests.KindCredentials, "aws1", state.DeleteOptions{Declarative: true}); err != nil || res.Deleted {
			t.Fatalf("declarative delete: %+v %v, want Terminating", res, err)
		}
		lt := state.Leftovers(s)
		all, err := lt.ListLeftovers(ctx)
		if err != nil || len(all["aws1"]) != 1 {
			t.Fatalf("ListLeftovers = %v, %v", all, err)
		}
		if err := lt.ReleaseLeftovers(ctx, "aws1", func(manifests.LeftoverVM) bool { return false }); err != nil {
			t.Fatal(err)
		}
		if !exists(t, s, manifests.KindCredentials, "aws1") {
			t.Fatal("credentials went while their leftover VM may run")
		}
		if err := lt.ReleaseLeftovers(ctx, "aws1", func(l manifests.LeftoverVM) bool { return l.VMID == "i-1" }); err != nil {
			t.Fatal(err)
		}
		if exists(t, s, manifests.KindCredentials, "aws1") {
			t.Error("credentials still stored after the sweep released their last leftover")
		}
		if all, _ := lt.ListLeftovers(ctx); len(all) != 0 {
			t.Errorf("leftovers after release: %v", all)
		}
	})
}

func TestForcedDeleteForgetsLeftoversOnlyWhenForced(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		s, _ := openStore(t)
		apply(t, s, credentialsWrite("aws1", "secret"), state.Write{Object: deployment("train", "aws1")})
		launched(t, s, "train", "i-1")
		if _, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{Force: true}); err != nil {
			t.Fatal(err)
		}
		res, err := s.Delete(ctx, manifests.KindCredentials, "aws1", state.DeleteOptions{Force: true})
		if err != nil || !res.Deleted {
			t.Fatalf("forced delete of credentials with leftovers: %+v %v", res, err)
		}
		if all, _ := s.ListLeftovers(ctx); len(all) != 0 {
			t.Errorf("leftovers remembered for credentials that are gone: %v", all)
		}
	})
}

func TestForcedDeleteOfADeploymentThatNeverLaunchedLeavesNothing(t *testing.T) {
	eachBackend(t, func(t *testing.T) {
		ctx := context.Background()
		s, _ := openStore(t)
		apply(t, s, credentialsWrite("aws1", "secret"), state.Write{Object: deployment("train", "aws1")})
		d := get(t, s, manifests.KindDeployment, "train")
		d.GetMeta().AddFinalizer(manifests.FinalizerVM)
		if _, err := s.Update(ctx, d); err != nil {
			t.Fatal(err)
		}
		res, err := s.Delete(ctx, manifests.KindDeployment, "train", state.DeleteOptions{Force: true})
		if err != nil || !res.Deleted || res.Leftover != nil {
			t.Fatalf("forced delete: %+v %v, want deleted with no leftover", res, err)
		}
		if res, err := s.Delete(ctx, manifests.KindCredentials, "aws1", state.DeleteOptions{}); err != nil || !res.Deleted {
			t.Errorf("credentials delete after: %+v %v", res, err)
		}
	})
}
