package cli

// Integration tests of the control loop against the real Docker engine:
// deployments become containers, killing one is a preemption, and secrets
// are resolved afresh at every VM creation. Under CI=true they fail if the
// engine is unreachable.

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider/local"
)

// dockerEnv is an env whose control plane runs deployments on the real
// engine, with the demo image built.
type dockerEnv struct {
	*env
	docker *client.Client
	image  string
}

func newDockerEnv(t *testing.T) *dockerEnv {
	t.Helper()
	docker := testenv.RequireDocker(t)
	image := testenv.RequireDemoImage(t)
	e := newEnvWith(t, func(c *controlplane.Config) {
		c.Resync = 2 * time.Second
		c.OrphanGrace = 3 * time.Second
	})
	return &dockerEnv{env: e, docker: docker, image: image}
}

type ctr struct {
	ID      string
	State   string
	Attempt string
	Env     map[string]string
}

// containers lists this control plane's containers of a deployment, with
// the environment the engine holds for each.
func (e *dockerEnv) containers(deployment string) []ctr {
	e.t.Helper()
	ctx := context.Background()
	res, err := e.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).
		Add("label", local.LabelCluster+"="+e.cluster, local.LabelDeployment+"="+deployment)})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []ctr
	for _, c := range res.Items {
		in, err := e.docker.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
		if err != nil {
			continue // removed meanwhile
		}
		env := map[string]string{}
		for _, kv := range in.Container.Config.Env {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		out = append(out, ctr{ID: c.ID[:12], State: string(c.State), Attempt: c.Labels[local.LabelAttempt], Env: env})
	}
	return out
}

// running returns the only running container of a deployment, waiting for
// there to be exactly one.
func (e *dockerEnv) running(deployment string) ctr {
	e.t.Helper()
	var got []ctr
	e.eventually(fmt.Sprintf("exactly one running container of %s", deployment), func() bool {
		got = nil
		for _, c := range e.containers(deployment) {
			if c.State == "running" {
				got = append(got, c)
			}
		}
		return len(got) == 1
	})
	return got[0]
}

func (e *dockerEnv) kill(c ctr) {
	e.t.Helper()
	if _, err := e.docker.ContainerKill(context.Background(), c.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		e.t.Fatal(err)
	}
}

func (e *dockerEnv) deployment(name string) *manifests.Deployment {
	e.t.Helper()
	var d manifests.Deployment
	if err := json.Unmarshal([]byte(e.must("get", "deploy", name, "-o", "json").stdout), &d); err != nil {
		e.t.Fatal(err)
	}
	return &d
}

func (e *dockerEnv) events(name string) string {
	return e.must("describe", "deploy", name).stdout
}

// eventually polls cond until it holds, for up to 30s: a real engine and
// a real control loop are doing the work.
func (e *dockerEnv) eventually(what string, cond func() bool) {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s\ncontrol plane log:\n%s\ndeployments:\n%s", what, tail(e.log.String(), 40), e.run("get", "deploy", "-o", "yaml").stdout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *dockerEnv) ready(name string) *manifests.Deployment {
	e.t.Helper()
	var d *manifests.Deployment
	e.eventually(name+" Ready", func() bool {
		d = e.deployment(name)
		c := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
		return c != nil && c.Status == manifests.ConditionTrue
	})
	return d
}

func TestApplyRunsAContainerWithTheResolvedEnvAndRecoversItWhenKilled(t *testing.T) {
	e := newDockerEnv(t)
	e.vars["DEMO_TOKEN"] = "token-v1"
	dir := t.TempDir()
	writeFile(t, dir, "app.yaml", fmt.Sprintf(`apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: demo}
spec: {fromEnv: [DEMO_TOKEN]}
---
apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: hello}
spec:
  image: %s
  env: {GREETING: hi}
  secrets: [demo]
`, e.image))
	r := e.must("apply", "-f", dir, "--wait", "--timeout", "60s")
	if !strings.Contains(r.stderr, "all 1 deployment(s) ready") {
		t.Errorf("apply --wait did not report readiness:\n%s", r)
	}
	first := e.running("hello")
	if first.Env["DEMO_TOKEN"] != "token-v1" || first.Env["GREETING"] != "hi" {
		t.Fatalf("container env = %v", first.Env)
	}
	d := e.deployment("hello")
	if d.Status.VM == nil || d.Status.VM.ID != first.ID || d.Status.VM.BundleVersions["demo"] != 1 {
		t.Fatalf("status VM = %+v, want container %s with demo@1", d.Status.VM, first.ID)
	}

	killedAt := time.Now()
	e.kill(first)
	var second ctr
	e.eventually("a replacement container", func() bool {
		for _, c := range e.containers("hello") {
			if c.State == "running" && c.ID != first.ID {
				second = c
				return true
			}
		}
		return false
	})
	t.Logf("replacement running %s after the kill", time.Since(killedAt).Round(time.Millisecond))
	if second.Attempt != "2" || second.Env["DEMO_TOKEN"] != "token-v1" {
		t.Errorf("replacement: attempt %s env %v", second.Attempt, second.Env)
	}
	d = e.ready("hello")
	if d.Status.Recoveries != 1 || d.Status.VM.ID != second.ID {
		t.Errorf("status after recovery: recoveries %d vm %+v", d.Status.Recoveries, d.Status.VM)
	}
	ev := e.events("hello")
	for _, w := range []string{"Preempted", "exited with code 137", "Recovering", "Recovered"} {
		if !strings.Contains(ev, w) {
			t.Errorf("describe lacks %q:\n%s", w, ev)
		}
	}
	// The dead container is cleaned up.
	e.eventually("the killed container removed", func() bool { return len(e.containers("hello")) == 1 })
	// The logs command shows the workload's log: key names, no values.
	logs := e.must("logs", "hello").stdout
	if !strings.Contains(logs, "DEMO_TOKEN") || strings.Contains(logs, "token-v1") {
		t.Errorf("logs:\n%s", logs)
	}
}

func TestRotatedBundleReachesOnlyNewVMs(t *testing.T) {
	e := newDockerEnv(t)
	e.must("secrets", "new", "creds", "API_TOKEN=old-value")
	e.must("submit", e.image, "--name", "job", "--secret", "creds", "--wait", "--timeout", "60s")
	first := e.running("job")
	if first.Env["API_TOKEN"] != "old-value" {
		t.Fatalf("env %v", first.Env)
	}

	// Rotation does not touch the running VM: once the controller has
	// handled the change (it reconciles the bundle's users), the VM is
	// the same.
	before := e.reconciles()
	e.must("secrets", "new", "creds", "API_TOKEN=new-value")
	e.settled(before)
	if c := e.running("job"); c.ID != first.ID || c.Env["API_TOKEN"] != "old-value" {
		t.Fatalf("rotation touched the running VM: %+v", c)
	}

	// A recovery resolves afresh.
	e.kill(first)
	var second ctr
	e.eventually("a replacement", func() bool {
		second = e.running("job")
		return second.ID != first.ID
	})
	if second.Env["API_TOKEN"] != "new-value" {
		t.Errorf("replacement after rotation has %q", second.Env["API_TOKEN"])
	}
	if d := e.ready("job"); d.Status.VM.BundleVersions["creds"] != 2 {
		t.Errorf("bundle versions %v, want creds@2", d.Status.VM.BundleVersions)
	}

	// So does a resubmit.
	e.must("secrets", "new", "creds", "API_TOKEN=newest-value")
	e.must("resubmit", "job", "--wait", "--timeout", "60s")
	var third ctr
	e.eventually("the resubmitted VM", func() bool {
		third = e.running("job")
		return third.ID != second.ID
	})
	if third.Env["API_TOKEN"] != "newest-value" {
		t.Errorf("resubmitted VM has %q", third.Env["API_TOKEN"])
	}
	d := e.ready("job")
	if d.Status.Recoveries != 1 {
		t.Errorf("a resubmit is not a recovery: recoveries %d", d.Status.Recoveries)
	}
	if !strings.Contains(e.events("job"), "resubmitted") {
		t.Errorf("no Replacing event naming the resubmit")
	}
}

func TestForceDeletedBundleStopsRecoveryUntilItReturns(t *testing.T) {
	e := newDockerEnv(t)
	e.must("secrets", "new", "hf", "HF_TOKEN=first")
	e.must("submit", e.image, "--name", "train", "--secret", "hf", "--wait", "--timeout", "60s")
	first := e.running("train")
	e.must("secrets", "delete", "hf", "--force")
	// Running VMs keep their values.
	if c := e.running("train"); c.ID != first.ID {
		t.Fatal("force delete touched the running VM")
	}
	e.kill(first)
	e.eventually("Ready=False SecretBundleNotFound", func() bool {
		c := manifests.FindCondition(e.deployment("train").Status.Conditions, manifests.ConditionReady)
		return c != nil && c.Status == manifests.ConditionFalse && c.Reason == "SecretBundleNotFound"
	})
	e.settled(0) // nothing queued or running: a wrong launch would be done by now
	for _, c := range e.containers("train") {
		if c.State == "running" {
			t.Fatalf("a VM was launched without its bundle: %+v", c)
		}
	}
	if ev := e.events("train"); !strings.Contains(ev, "SecretBundleNotFound") || !strings.Contains(ev, "hf") {
		t.Errorf("no SecretBundleNotFound event naming hf:\n%s", ev)
	}
	// The bundle returns: the deployment recovers with the new value.
	e.must("secrets", "new", "hf", "HF_TOKEN=second")
	c := e.running("train")
	if c.Env["HF_TOKEN"] != "second" {
		t.Errorf("recovered VM has %q", c.Env["HF_TOKEN"])
	}
	e.ready("train")
}

func TestFromFileDropsOneTrailingNewline(t *testing.T) {
	e := newDockerEnv(t)
	path := writeFile(t, t.TempDir(), "pw.txt", "s3cret-pw\n")
	e.must("secrets", "new", "db", "--from-file", "PASSWORD="+path)
	e.must("submit", e.image, "--name", "db-user", "--secret", "db", "--wait", "--timeout", "60s")
	if got := e.running("db-user").Env["PASSWORD"]; got != "s3cret-pw" {
		t.Errorf("PASSWORD = %q, want the file's line without its newline", got)
	}
}

func TestExplicitEnvWinsOverBundleKeys(t *testing.T) {
	e := newDockerEnv(t)
	e.must("secrets", "new", "a", "SHARED=from-a", "ONLY_A=a")
	e.must("secrets", "new", "b", "SHARED=from-b", "ONLY_B=b")
	e.must("submit", e.image, "--name", "merge", "--secret", "a", "--secret", "b", "--wait", "--timeout", "60s")
	e.must("submit", e.image, "--name", "override", "--secret", "a", "--secret", "b", "--env", "SHARED=explicit", "--wait", "--timeout", "60s")
	m := e.running("merge")
	if m.Env["SHARED"] != "from-b" || m.Env["ONLY_A"] != "a" || m.Env["ONLY_B"] != "b" {
		t.Errorf("bundles merge in order, later wins: %v", m.Env)
	}
	if o := e.running("override"); o.Env["SHARED"] != "explicit" {
		t.Errorf("explicit env should win: SHARED=%q", o.Env["SHARED"])
	}
}

func TestDeleteRemovesTheContainerThenTheObjectAndReleasesTheBundle(t *testing.T) {
	e := newDockerEnv(t)
	dir := t.TempDir()
	writeFile(t, dir, "app.yaml", fmt.Sprintf(`apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: hf}
spec: {stringData: {HF_TOKEN: x}}
---
apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec: {image: %s, secrets: [hf]}
`, e.image))
	e.must("apply", "-f", dir, "--wait", "--timeout", "60s")
	e.running("train")
	// Deleting the bundle by manifest while in use: Terminating, not
	// refused, not gone.
	bundleOnly := writeFile(t, t.TempDir(), "b.yaml", "apiVersion: anycloud.dev/v1\nkind: SecretBundle\nmetadata: {name: hf}\nspec: {stringData: {HF_TOKEN: x}}\n")
	r := e.must("delete", "-f", bundleOnly)
	if !strings.Contains(r.stdout, "secretbundle/hf terminating") {
		t.Fatalf("%s", r)
	}
	if got := e.must("get", "sb", "hf").stdout; !strings.Contains(got, "Terminating") {
		t.Errorf("bundle not Terminating:\n%s", got)
	}
	r = e.must("delete", "deploy", "train", "--wait", "--timeout", "60s")
	if !strings.Contains(r.stdout, "deployment/train gone") {
		t.Errorf("%s", r)
	}
	if n := len(e.containers("train")); n != 0 {
		t.Errorf("%d container(s) left after delete", n)
	}
	if r := e.run("get", "sb", "hf"); r.code != 1 {
		t.Errorf("bundle outlived its last user: %s", r)
	}
}

func TestOrphanContainersOfThisControlPlaneAreSwept(t *testing.T) {
	e := newDockerEnv(t)
	ctx := context.Background()
	// A container labelled as ours, for a uid no deployment has.
	res, err := e.docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Name: "anycloud-ghost-" + e.cluster,
		Config: &container.Config{Image: e.image, Labels: map[string]string{
			local.LabelManaged: "true", local.LabelCluster: e.cluster, local.LabelDeployment: "ghost",
			local.LabelUID: "00000000-dead-4bee-8000-000000000000", local.LabelAttempt: "1",
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.docker.ContainerStart(ctx, res.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatal(err)
	}
	e.eventually("the orphan swept", func() bool { return len(e.containers("ghost")) == 0 })
	if !strings.Contains(e.log.String(), "orphan VM terminated") {
		t.Errorf("the sweep was not logged")
	}
}
