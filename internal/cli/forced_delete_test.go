package cli

import (
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/manifests"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
)

// TestForcedCredentialsDeleteThenDeploymentDeleteTerminatesTheVM: the
// review found `credentials delete X --force` then `delete deploy D`
// printing "gone" while D's container ran on and nothing swept it. The
// credentials now wait for their users, so the deployment's delete can
// still terminate its VM.
func TestForcedCredentialsDeleteThenDeploymentDeleteTerminatesTheVM(t *testing.T) {
	e := newDockerEnv(t)
	e.must("credentials", "new", "dock", "--provider", "local")
	e.must("submit", e.image, "--name", "d", "--credentials", "dock", "--wait", "--timeout", "60s")
	e.running("d")
	r := e.must("credentials", "delete", "dock", "--force")
	if !strings.Contains(r.stdout, "credentials/dock terminating: in use by d") {
		t.Errorf("forced credentials delete:\n%s", r)
	}
	if got := e.must("get", "creds", "dock", "-o", "json").stdout; !strings.Contains(got, `"phase": "Terminating"`) {
		t.Errorf("credentials not Terminating:\n%s", got)
	}
	if r := e.run("submit", e.image, "--name", "other", "--credentials", "dock"); r.err == nil {
		t.Errorf("a new deployment could use credentials being deleted:\n%s", r)
	}
	r = e.must("delete", "deploy", "d", "--wait", "--timeout", "60s")
	if !strings.Contains(r.stdout, "deployment/d gone") {
		t.Errorf("%s", r)
	}
	for _, c := range e.containers("d") {
		if c.State == "running" {
			t.Fatalf("the deployment is gone and its container still runs: %+v", c)
		}
	}
	e.eventually("the credentials gone with their last user", func() bool { return e.run("get", "creds", "dock").code == 1 })
}

// TestForcedDeploymentDeleteLeavesItsVMToTheSweepAndSaysSo: delete
// --force does not wait for the VM; it says which VM it leaves, records
// it on the credentials, and the orphan sweep ends it.
func TestForcedDeploymentDeleteLeavesItsVMToTheSweepAndSaysSo(t *testing.T) {
	e := newDockerEnv(t)
	e.must("credentials", "new", "dock", "--provider", "local")
	e.must("submit", e.image, "--name", "d", "--credentials", "dock", "--wait", "--timeout", "60s")
	vm := e.deployment("d").Status.VM.ID
	r := e.must("delete", "deploy", "d", "--force")
	if !strings.Contains(r.stdout, "deployment/d deleted without waiting for its VM: VM "+vm+" may still be running") ||
		!strings.Contains(r.stdout, "recorded on credentials dock") {
		t.Fatalf("forced delete says:\n%s", r)
	}
	if r := e.run("get", "deploy", "d"); r.code != 1 {
		t.Fatalf("the deployment is still there:\n%s", r)
	}
	if d := e.must("describe", "creds", "dock").stdout; !strings.Contains(d, "Leftover VMs") || !strings.Contains(d, vm) {
		t.Errorf("describe creds does not show the leftover VM:\n%s", d)
	}
	// The credentials are the only way to that VM: kept until it is gone.
	if r := e.run("credentials", "delete", "dock"); r.code != 3 || !strings.Contains(r.stderr, vm) {
		t.Errorf("credentials delete with a leftover VM:\n%s", r)
	}
	e.eventually("the orphan sweep to end the container", func() bool {
		for _, c := range e.containers("d") {
			if c.State == "running" {
				return false
			}
		}
		return true
	})
	e.eventually("the leftover released", func() bool {
		return !strings.Contains(e.must("describe", "creds", "dock").stdout, "Leftover VMs")
	})
	e.must("credentials", "delete", "dock")
}

// TestDeploymentWhoseCredentialsNeverWorkedIsDeleted: nothing was ever
// launched, so there is nothing to wait for; it must not be Terminating
// for ever.
func TestDeploymentWhoseCredentialsNeverWorkedIsDeleted(t *testing.T) {
	// Short retries: each failing call would otherwise retry for 20 s,
	// which is the product's default but not what this test is about.
	e := newEnvFor(t, func(c *controlplane.Config) {
		c.TuneAWS = func(o *awsprovider.Options) {
			o.Retry = awsprovider.RetryPolicy{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, MaxElapsed: time.Second}
		}
	})
	e.vars["AWS_SECRET_ACCESS_KEY"] = "wrong"
	// Port 1 on loopback: nothing listens; every call fails.
	e.must("credentials", "new", "broken", "--provider", "aws", "--region", "us-east-1", "--access-key-id", "AKIDBROKEN", "--endpoint-url", "http://127.0.0.1:1")
	e.must("submit", "img:1", "--name", "d", "--credentials", "broken")
	// The first listing fails only after the SDK's own retries.
	waitForWithin(t, 60*time.Second, func() bool {
		d, err := getDeployment(e, "d")
		if err != nil {
			return false
		}
		c := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
		return c != nil && c.Reason == "ProviderUnavailable"
	})
	r := e.must("delete", "deploy", "d", "--wait", "--timeout", "1m")
	if !strings.Contains(r.stdout, "deployment/d gone") {
		t.Errorf("%s", r)
	}
	// And once gone, its credentials can go too.
	e.must("credentials", "delete", "broken")
}

func waitForWithin(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %s", d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
