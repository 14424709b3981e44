package cli

// End-to-end tests of the aws provider through the cloud emulator
// (package cloudemu): the control plane drives moto_server behind the
// fault-injecting proxy that counts EC2 actions; every instance boots a
// real VM — a container of the VM image with real cloud-init, sshd and
// the docker CLI — on a loopback address of its own, which the proxy
// reports as the instance's address; the bootstrap pins the host key the
// VM printed on its console and starts the workload with `docker run
// --env-file` on the VM, as a sibling container on this machine's
// engine. The AWS CLI acts on moto from outside.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/internal/cloudemu"
	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
	"github.com/anycloud/anycloud/provider/aws/bootstrap"
)

// awsEnv is a control plane whose aws credentials point at the cloud
// emulator.
type awsEnv struct {
	*env
	cloud   *cloudemu.Emulator
	moto    string
	proxy   *ec2proxy.Proxy
	outside *ec2.Client
	west    *ec2.Client
	image   string
	docker  *client.Client
	suffix  string
}

func newAWSEnv(t *testing.T) *awsEnv {
	t.Helper()
	return newAWSEnvFor(t, time.Second)
}

// newAWSEnvFor is newAWSEnv with the control plane's resync period.
func newAWSEnvFor(t testing.TB, resync time.Duration) *awsEnv {
	t.Helper()
	docker := testenv.RequireDocker(t)
	image := testenv.RequireDemoImage(t)
	cloud := testenv.StartCloud(t, testenv.CloudOptions{Regions: []string{"us-east-1", "us-west-2"}, Quiet: true})
	outside, _, err := awsprovider.NewClient(context.Background(), awsprovider.ClientConfig{
		Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: cloud.Moto,
	})
	if err != nil {
		t.Fatal(err)
	}
	west, _, err := awsprovider.NewClient(context.Background(), awsprovider.ClientConfig{
		Region: "us-west-2", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: cloud.Moto,
	})
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvFor(t, func(c *controlplane.Config) {
		c.Resync = resync
		c.TuneAWS = func(o *awsprovider.Options) {
			o.Retry = awsprovider.RetryPolicy{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, MaxElapsed: 3 * time.Second}
			o.Interruptions.Wait = 2 * time.Second // a test's control plane stops without waiting out a 20s poll
		}
	})
	b := make([]byte, 3)
	rand.Read(b)
	a := &awsEnv{env: e, cloud: cloud, moto: cloud.Moto, proxy: cloud.Proxy, outside: outside, west: west, image: image, docker: docker, suffix: hex.EncodeToString(b)}
	e.vars["AWS_SECRET_ACCESS_KEY"] = "testing"
	e.must("credentials", "new", "moto", "--provider", "aws", "--region", "us-east-1",
		"--endpoint-url", cloud.Endpoint, "--access-key-id", "testing")
	delete(e.vars, "AWS_SECRET_ACCESS_KEY")
	return a
}

// name makes a deployment name unique to this test: workload containers
// of emulated VMs share the machine's engine.
func (a *awsEnv) name(base string) string { return base + "-" + a.suffix }

func (a *awsEnv) instances() []types.Instance { return a.instancesIn(a.outside) }

func (a *awsEnv) instancesIn(c *ec2.Client) []types.Instance {
	a.t.Helper()
	out, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{})
	if err != nil {
		a.t.Fatal(err)
	}
	var all []types.Instance
	for _, r := range out.Reservations {
		all = append(all, r.Instances...)
	}
	return all
}

func getDeployment(e *env, name string) (*manifests.Deployment, error) {
	r := e.run("get", "deploy", name, "-o", "json")
	if r.err != nil {
		return nil, r.err
	}
	o, err := manifests.Unmarshal(manifests.KindDeployment, []byte(r.stdout))
	if err != nil {
		return nil, err
	}
	return o.(*manifests.Deployment), nil
}

// eventually waits for cond, with a deadline that leaves room for real
// VM boots on a loaded machine.
func (a *awsEnv) eventually(what string, cond func() bool) {
	a.t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			a.t.Fatalf("timed out waiting for %s\ncontrol plane log:\n%s\nproxy counts: %v", what, tail(a.log.String(), 30), a.proxy.Counts())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// userData is an instance's user-data as anyone allowed
// ec2:DescribeInstanceAttribute reads it, with the AWS CLI.
func (a *awsEnv) userData(id string) string {
	a.t.Helper()
	out := testenv.AWSCLI(a.t, a.moto, "ec2", "describe-instance-attribute", "--instance-id", id,
		"--attribute", "userData", "--query", "UserData.Value", "--output", "text")
	ud, err := base64.StdEncoding.DecodeString(strings.TrimSpace(out))
	if err != nil {
		a.t.Fatalf("user-data of %s: %v", id, err)
	}
	return string(ud)
}

// waitForResyncs waits until the controller has listed the scope n more
// times: one DescribeInstances per resync.
func (a *awsEnv) waitForResyncs(n int) {
	a.t.Helper()
	start := a.proxy.Count("DescribeInstances")
	a.eventually(fmt.Sprintf("%d resyncs", n), func() bool { return a.proxy.Count("DescribeInstances") >= start+n })
}

func (a *awsEnv) ready(name string) *manifests.Deployment {
	a.t.Helper()
	var d *manifests.Deployment
	a.eventually(name+" Ready", func() bool {
		var err error
		d, err = getDeployment(a.env, name)
		if err != nil {
			return false
		}
		c := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
		return c != nil && c.Status == manifests.ConditionTrue
	})
	return d
}

// workloadEnv reads the env of the workload container the bootstrap
// started for a deployment.
func (a *awsEnv) workloadEnv(name string) map[string]string {
	a.t.Helper()
	in, err := a.docker.ContainerInspect(context.Background(), "anycloud-"+name, client.ContainerInspectOptions{})
	if err != nil {
		a.t.Fatalf("workload container of %s: %v", name, err)
	}
	env := map[string]string{}
	for _, kv := range in.Container.Config.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	return env
}

// TestAWSSpotDeploymentRunsOnARealVMAndRecoversWithRotatedSecrets is the
// whole AWS chain: apply a spot Deployment with a SecretBundle → one
// RunInstances → real cloud-init on the VM → SSH with the host key pinned
// from the console → the env file on the VM's tmpfs, 0600 root → the
// workload container has the values, explicit env winning → logs and ssh
// work. Then a preemption from outside brings a new VM with the rotated
// value, and delete ends the instance, the VM and the keys.
func TestAWSSpotDeploymentRunsOnARealVMAndRecoversWithRotatedSecrets(t *testing.T) {
	a := newAWSEnv(t)
	name := a.name("train")
	dir := t.TempDir()
	writeFile(t, dir, "train.yaml", fmt.Sprintf(`apiVersion: anycloud.dev/v1
kind: SecretBundle
metadata: {name: hf}
spec:
  stringData: {HF_TOKEN: CANARY-aws-7e8f9a, EPOCHS: "from-bundle"}
---
apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: %s}
spec:
  image: %s
  credentials: moto
  vmType: t3.micro
  spot: true
  secrets: [hf]
  env: {EPOCHS: "3"}
`, name, a.image))
	a.must("apply", "-f", dir, "--wait", "--timeout", "3m")
	d := a.ready(name)

	if got := a.proxy.Count("RunInstances"); got != 1 {
		t.Errorf("RunInstances = %d, want 1", got)
	}
	if got := a.proxy.Count("CreateTags"); got != 0 {
		t.Errorf("CreateTags = %d, want 0", got)
	}
	insts := a.instances()
	if len(insts) != 1 || insts[0].InstanceLifecycle != types.InstanceLifecycleTypeSpot {
		t.Fatalf("instances: %d, lifecycle %v", len(insts), insts)
	}
	first := d.Status.VM.ID
	if first != sdkaws.ToString(insts[0].InstanceId) || d.Status.VM.Market != "spot" || !d.Status.VM.Bootstrapped || d.Status.VM.BundleVersions["hf"] != 1 {
		t.Errorf("status VM = %+v", d.Status.VM)
	}
	if mo := insts[0].MetadataOptions; mo == nil || mo.HttpTokens != types.HttpTokensStateRequired {
		t.Errorf("instance metadata options %+v, want IMDSv2 required", mo)
	}
	// The workload is a sibling container the VM's docker started, with
	// the bundle's values and the explicit env winning.
	if env := a.workloadEnv(name); env["HF_TOKEN"] != "CANARY-aws-7e8f9a" || env["EPOCHS"] != "3" {
		t.Errorf("workload env = %v", env)
	}
	if a.proxy.Seen("CANARY-aws-7e8f9a") {
		t.Error("the secret value was sent to EC2")
	}
	if r := a.run("secrets", "delete", "hf"); r.code != 3 || !strings.Contains(r.stderr, name) {
		t.Errorf("secrets delete of a bundle in use: exit %d\n%s", r.code, r.stderr)
	}

	// On the VM: the env file is on tmpfs, 0600, root's; ssh and logs use
	// the deployment's key and the pinned host key.
	if r := a.run("ssh", name, "--", "sudo", "stat", "-f", "-c", "%T", bootstrap.DefaultEnvFile, ";", "sudo", "stat", "-c", "%a:%U", bootstrap.DefaultEnvFile); r.err != nil ||
		strings.Fields(r.stdout)[0] != "tmpfs" || strings.TrimSpace(strings.Fields(r.stdout)[1]) != "600:root" {
		t.Errorf("anycloud ssh: env file filesystem, mode and owner %q, err %v\n%s", r.stdout, r.err, r.stderr)
	}
	if r := a.run("ssh", name, "--", "cloud-init", "status"); r.err != nil || !strings.Contains(r.stdout, "done") {
		t.Errorf("cloud-init status on the VM: %q %v", r.stdout, r.err)
	}
	if logs := a.must("logs", name).stdout; !strings.Contains(logs, "HF_TOKEN") || strings.Contains(logs, "CANARY-aws-7e8f9a") {
		t.Errorf("logs over SSH:\n%s", logs)
	}
	keyPath := filepath.Join(a.home, ".ssh", d.Metadata.UID)
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("deployment key %s: %v", keyPath, err)
	}

	// Rotate, then a preemption from outside, by the AWS CLI: the new VM
	// gets the rotated value; the old one kept its own.
	a.must("secrets", "new", "hf", "HF_TOKEN=CANARY-rotated-3c2b1a", "EPOCHS=from-bundle")
	testenv.AWSCLI(t, a.moto, "ec2", "terminate-instances", "--instance-ids", first)
	var d2 *manifests.Deployment
	a.eventually("a replacement", func() bool {
		d2 = a.ready(name)
		return d2.Status.VM.ID != first && d2.Status.VM.Bootstrapped
	})
	if d2.Status.Recoveries != 1 || d2.Status.VM.Attempt != 2 || d2.Status.VM.BundleVersions["hf"] != 2 {
		t.Errorf("after the preemption: recoveries %d attempt %d bundles %v", d2.Status.Recoveries, d2.Status.VM.Attempt, d2.Status.VM.BundleVersions)
	}
	if env := a.workloadEnv(name); env["HF_TOKEN"] != "CANARY-rotated-3c2b1a" || env["EPOCHS"] != "3" {
		t.Errorf("replacement workload env = %v, want the rotated value", env)
	}
	var replacement types.Instance
	for _, in := range a.instances() {
		if sdkaws.ToString(in.InstanceId) == d2.Status.VM.ID {
			replacement = in
		}
	}
	if tag := awsTag(replacement, awsprovider.TagAttempt); tag != "2" {
		t.Errorf("replacement attempt tag %q, want 2", tag)
	}
	ev := a.must("describe", "deploy", name).stdout
	if !strings.Contains(ev, "Preempted") || !strings.Contains(ev, "UserInitiatedShutdown") {
		t.Errorf("no Preempted event naming EC2's reason:\n%s", ev)
	}
	if got := a.proxy.Count("RunInstances"); got != 2 {
		t.Errorf("RunInstances after one recovery = %d, want 2", got)
	}
	// The metrics count the same cloud calls, and the recovery.
	m := a.scrape()
	if got := metric(m, `anycloud_cloud_requests_total{action="RunInstances",outcome="ok",provider="aws"}`); got != 2 {
		t.Errorf("anycloud_cloud_requests_total of RunInstances = %v, want 2", got)
	}
	if got := metric(m, `anycloud_recoveries_total{reason="preempted"}`); got != 1 {
		t.Errorf("anycloud_recoveries_total = %v, want 1", got)
	}
	if c := a.cloud.VMs.Container(first); c != "" {
		t.Errorf("the preempted VM's container %s is still there", c)
	}

	// Anyone who may describe the instances reads their user-data: it
	// holds no private key and no secret value.
	for _, in := range a.instances() {
		ud := a.userData(sdkaws.ToString(in.InstanceId))
		for _, bad := range []string{"PRIVATE KEY", "CANARY-aws-7e8f9a", "CANARY-rotated-3c2b1a"} {
			if strings.Contains(ud, bad) {
				t.Errorf("user-data of %s contains %q", sdkaws.ToString(in.InstanceId), bad)
			}
		}
		if !strings.HasPrefix(ud, "#cloud-config") {
			t.Errorf("user-data of %s:\n%s", sdkaws.ToString(in.InstanceId), ud)
		}
	}

	// Delete: TerminateInstances, the VM container goes, then the object
	// and the deployment's keys.
	a.proxy.Reset()
	a.must("delete", "deploy", name, "--wait", "--timeout", "60s")
	if a.proxy.Count("TerminateInstances") < 1 {
		t.Errorf("delete made no TerminateInstances: %v", a.proxy.Counts())
	}
	for _, p := range []string{keyPath, keyPath + ".pub", keyPath + ".known_hosts"} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s outlived the deployment: %v", p, err)
		}
	}
	for _, in := range a.instances() {
		if sdkaws.ToString(in.InstanceId) == d2.Status.VM.ID && in.State.Name != types.InstanceStateNameTerminated {
			t.Errorf("instance %s is %s after delete", d2.Status.VM.ID, in.State.Name)
		}
	}
	a.eventually("the VM container gone", func() bool { return a.cloud.VMs.Container(d2.Status.VM.ID) == "" })
	if _, err := a.docker.ContainerInspect(context.Background(), "anycloud-"+name, client.ContainerInspectOptions{}); err == nil {
		t.Error("the workload container outlived its VM")
	}
}

func awsTag(inst types.Instance, key string) string {
	for _, tg := range inst.Tags {
		if sdkaws.ToString(tg.Key) == key {
			return sdkaws.ToString(tg.Value)
		}
	}
	return ""
}

func TestAWSIdleResyncIsOneDescribeAndNoMutatingCalls(t *testing.T) {
	a := newAWSEnv(t)
	var names []string
	for i := range 3 {
		n := a.name(fmt.Sprintf("idle%d", i))
		names = append(names, n)
		a.must("submit", a.image, "--name", n, "--credentials", "moto")
	}
	for _, n := range names {
		a.ready(n)
	}
	// Converged: from one resync to the third after it, nothing but the
	// listing itself.
	a.waitForResyncs(1)
	a.proxy.Reset()
	a.waitForResyncs(3)
	counts := a.proxy.Counts()
	delete(counts, "DescribeInstances")
	// The interruption consumer's long polls (and the deletes of what it
	// received) are SQS's, not EC2's: they cost no EC2 request tokens.
	delete(counts, "ReceiveMessage")
	delete(counts, "DeleteMessageBatch")
	if len(counts) != 0 {
		t.Errorf("an idle, converged system made other calls: %v", counts)
	}
}

func TestAWSConvergesThroughThrottlingAndDroppedResponsesWithoutDuplicates(t *testing.T) {
	a := newAWSEnv(t)
	name := a.name("flaky")
	a.proxy.Inject("RunInstances", ec2proxy.Throttle, ec2proxy.DropResponse, ec2proxy.Unavailable, ec2proxy.DropResponse)
	a.proxy.Inject("DescribeInstances", ec2proxy.Throttle, ec2proxy.Unavailable)
	a.must("submit", a.image, "--name", name, "--credentials", "moto", "--spot")
	a.ready(name)
	a.waitForResyncs(2) // a duplicate would show in these listings
	var ours int
	for _, in := range a.instances() {
		if awsTag(in, awsprovider.TagDeployment) == name && in.State.Name != types.InstanceStateNameTerminated {
			ours++
		}
	}
	if ours != 1 {
		t.Errorf("%d live instances for %s, want exactly 1", ours, name)
	}
	if a.proxy.Forwarded("RunInstances") < 1 || a.proxy.Count("RunInstances") < 5 {
		t.Errorf("RunInstances arrivals %d forwarded %d: the faults were not exercised", a.proxy.Count("RunInstances"), a.proxy.Forwarded("RunInstances"))
	}
}

// TestAWSDeploymentMovesWithItsCredentialsRegion: the credentials' region
// changes under a running deployment; its VM is terminated in the old
// region and replaced in the new one, and that is not a preemption.
func TestAWSDeploymentMovesWithItsCredentialsRegion(t *testing.T) {
	a := newAWSEnv(t)
	name := a.name("mover")
	a.must("submit", a.image, "--name", name, "--credentials", "moto")
	first := a.ready(name).Status.VM
	if !strings.HasSuffix(first.Scope, "us-east-1") {
		t.Fatalf("scope %q", first.Scope)
	}
	a.vars["AWS_SECRET_ACCESS_KEY"] = "testing"
	a.must("credentials", "new", "moto", "--provider", "aws", "--region", "us-west-2",
		"--endpoint-url", a.proxy.URL(), "--access-key-id", "testing")
	var d *manifests.Deployment
	a.eventually("the deployment in us-west-2", func() bool {
		d = a.ready(name)
		return d.Status.VM != nil && strings.HasSuffix(d.Status.VM.Scope, "us-west-2")
	})
	for _, in := range a.instances() {
		if sdkaws.ToString(in.InstanceId) == first.ID && in.State.Name != types.InstanceStateNameTerminated {
			t.Errorf("the old VM %s is %s in us-east-1", first.ID, in.State.Name)
		}
	}
	var west int
	for _, in := range a.instancesIn(a.west) {
		if awsTag(in, awsprovider.TagDeployment) == name && in.State.Name == types.InstanceStateNameRunning {
			west++
		}
	}
	if west != 1 {
		t.Errorf("%d running instances in us-west-2, want 1", west)
	}
	if d.Status.Recoveries != 0 {
		t.Errorf("a move counted as %d recoveries", d.Status.Recoveries)
	}
	if ev := a.must("describe", "deploy", name).stdout; !strings.Contains(ev, "Moved") || strings.Contains(ev, "Preempted") {
		t.Errorf("events:\n%s", ev)
	}
}
