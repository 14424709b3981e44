package cli

// End-to-end tests of the aws provider: the control plane drives moto_server
// (behind the fault-injecting proxy that counts EC2 actions), the AWS CLI
// acts on moto from outside, and each "VM" is emulated the way cloud-init
// would set it up: its user-data is read back from EC2 and a private sshd
// is started with the host key and authorized key it carries, on which the
// bootstrap runs `docker run --env-file` against the local Docker engine.

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/moby/moby/client"
	"sigs.k8s.io/yaml"

	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
)

// vmEmulator starts one sshd per instance, configured from the instance's
// user-data as cloud-init would, and remembers the workloads it ran.
type vmEmulator struct {
	sshd    string
	dir     string
	outside []*ec2.Client // one per region the tests use

	mu    sync.Mutex
	addrs map[string]string
	stops []func()
	errs  []error
}

func (v *vmEmulator) address(vm provider.VM) string {
	v.mu.Lock()
	defer v.mu.Unlock()
	if a, ok := v.addrs[vm.ID]; ok {
		return a
	}
	addr, err := v.boot(vm.ID)
	if err != nil {
		v.errs = append(v.errs, err)
		return "127.0.0.1:1" // the bootstrap fails and is retried
	}
	v.addrs[vm.ID] = addr
	return addr
}

// boot reads the instance's user-data and starts its sshd.
func (v *vmEmulator) boot(id string) (string, error) {
	var (
		out *ec2.DescribeInstanceAttributeOutput
		err error
	)
	for _, c := range v.outside {
		out, err = c.DescribeInstanceAttribute(context.Background(), &ec2.DescribeInstanceAttributeInput{
			InstanceId: sdkaws.String(id), Attribute: types.InstanceAttributeNameUserData,
		})
		if err == nil {
			break
		}
	}
	if err != nil {
		return "", err
	}
	raw, err := base64.StdEncoding.DecodeString(sdkaws.ToString(out.UserData.Value))
	if err != nil {
		return "", err
	}
	var cc struct {
		SSHKeys struct {
			ED25519Private string `json:"ed25519_private"`
		} `json:"ssh_keys"`
		SSHAuthorizedKeys []string `json:"ssh_authorized_keys"`
	}
	if err := yaml.Unmarshal(raw, &cc); err != nil {
		return "", fmt.Errorf("user-data of %s: %w", id, err)
	}
	dir := filepath.Join(v.dir, id)
	os.MkdirAll(dir, 0o700)
	addr, stop, err := testenv.RunSSHD(v.sshd, dir, []byte(cc.SSHKeys.ED25519Private), cc.SSHAuthorizedKeys)
	if err != nil {
		return "", err
	}
	v.stops = append(v.stops, stop)
	return addr, nil
}

func (v *vmEmulator) close() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, s := range v.stops {
		s()
	}
}

// awsEnv is a control plane whose aws credentials point at moto through
// the proxy.
type awsEnv struct {
	*env
	moto    string
	proxy   *ec2proxy.Proxy
	outside *ec2.Client
	west    *ec2.Client
	vms     *vmEmulator
	image   string
	docker  *client.Client
	suffix  string
	envFile string
}

func newAWSEnv(t *testing.T) *awsEnv {
	t.Helper()
	docker := testenv.RequireDocker(t)
	image := testenv.RequireDemoImage(t)
	sshd := testenv.RequireSSHD(t)
	moto := testenv.StartMoto(t)
	proxy, err := ec2proxy.New(moto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	outside, _, err := awsprovider.NewClient(context.Background(), awsprovider.ClientConfig{
		Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: moto,
	})
	if err != nil {
		t.Fatal(err)
	}
	west, _, err := awsprovider.NewClient(context.Background(), awsprovider.ClientConfig{
		Region: "us-west-2", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: moto,
	})
	if err != nil {
		t.Fatal(err)
	}
	vms := &vmEmulator{sshd: sshd, dir: testenv.ShortTempDir(t), outside: []*ec2.Client{outside, west}, addrs: map[string]string{}}
	envFile := filepath.Join(testenv.ShortTempDir(t), "anycloud-secrets.env")
	e := newEnvWith(t, func(c *controlplane.Config) {
		c.Resync = time.Second
		c.TuneAWS = func(o *awsprovider.Options) {
			o.SSH.Address = vms.address
			o.SSH.User = "root"
			o.SSH.EnvFile = envFile
			o.Retry = awsprovider.RetryPolicy{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, MaxElapsed: 3 * time.Second}
		}
	})
	b := make([]byte, 3)
	rand.Read(b)
	a := &awsEnv{env: e, moto: moto, proxy: proxy, outside: outside, west: west, vms: vms, image: image, docker: docker, suffix: hex.EncodeToString(b), envFile: envFile}
	t.Cleanup(func() {
		vms.close()
		a.removeWorkloads()
	})
	e.vars["AWS_SECRET_ACCESS_KEY"] = "testing"
	e.must("credentials", "new", "moto", "--provider", "aws", "--region", "us-east-1",
		"--endpoint-url", proxy.URL(), "--access-key-id", "testing")
	delete(e.vars, "AWS_SECRET_ACCESS_KEY")
	return a
}

// name makes a deployment name unique to this test: workload containers
// of emulated VMs share the machine's engine.
func (a *awsEnv) name(base string) string { return base + "-" + a.suffix }

func (a *awsEnv) removeWorkloads() {
	ctx := context.Background()
	res, err := a.docker.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: make(client.Filters).Add("name", "anycloud-.*-"+a.suffix)})
	if err != nil {
		return
	}
	for _, c := range res.Items {
		a.docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true})
	}
}

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

func (a *awsEnv) deployment(name string) *manifests.Deployment {
	a.t.Helper()
	obj, err := getDeployment(a.env, name)
	if err != nil {
		a.t.Fatal(err)
	}
	return obj
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

func (a *awsEnv) eventually(what string, cond func() bool) {
	a.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			a.vms.mu.Lock()
			errs := a.vms.errs
			a.vms.mu.Unlock()
			a.t.Fatalf("timed out waiting for %s\nemulator errors: %v\ncontrol plane log:\n%s\nproxy counts: %v", what, errs, tail(a.log.String(), 30), a.proxy.Counts())
		}
		time.Sleep(50 * time.Millisecond)
	}
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

func TestAWSSpotDeploymentConvergesWithOneRunInstancesAndRecoversFromAnOutsideTermination(t *testing.T) {
	a := newAWSEnv(t)
	name := a.name("train")
	a.must("secrets", "new", "hf", "HF_TOKEN=CANARY-aws-7e8f9a")
	a.must("submit", a.image, "--name", name, "--credentials", "moto", "--vm-type", "g6e.xlarge", "--spot", "--secret", "hf", "--env", "EPOCHS=3")
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
	if d.Status.VM.ID != sdkaws.ToString(insts[0].InstanceId) || d.Status.VM.Market != "spot" || !d.Status.VM.Bootstrapped || d.Status.VM.BundleVersions["hf"] != 1 {
		t.Errorf("status VM = %+v", d.Status.VM)
	}
	if env := a.workloadEnv(name); env["HF_TOKEN"] != "CANARY-aws-7e8f9a" || env["EPOCHS"] != "3" {
		t.Errorf("workload env = %v", env)
	}
	if a.proxy.Seen("CANARY-aws-7e8f9a") {
		t.Error("the secret value was sent to EC2")
	}
	// The bundle is protected while the aws deployment runs.
	if r := a.run("secrets", "delete", "hf"); r.code != 3 || !strings.Contains(r.stderr, name) {
		t.Errorf("secrets delete of a bundle in use: exit %d\n%s", r.code, r.stderr)
	}

	// A preemption from outside, by the AWS CLI.
	first := d.Status.VM.ID
	testenv.AWSCLI(t, a.moto, "ec2", "terminate-instances", "--instance-ids", first)
	d2 := a.ready(name)
	a.eventually("a replacement", func() bool { d2 = a.ready(name); return d2.Status.VM.ID != first })
	if d2.Status.Recoveries != 1 || d2.Status.VM.Attempt != 2 {
		t.Errorf("after the preemption: recoveries %d attempt %d", d2.Status.Recoveries, d2.Status.VM.Attempt)
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

	// ssh and logs reach the VM with the deployment's key and pinned host
	// key.
	if r := a.run("ssh", name, "--", "stat", "-c", "%a:%U", a.envFile); r.err != nil || strings.TrimSpace(r.stdout) != "600:root" {
		t.Errorf("anycloud ssh: env file mode/owner %q, err %v\n%s", r.stdout, r.err, r.stderr)
	}
	if logs := a.must("logs", name).stdout; !strings.Contains(logs, "HF_TOKEN") || strings.Contains(logs, "CANARY-aws-7e8f9a") {
		t.Errorf("logs over SSH:\n%s", logs)
	}
	keyPath := filepath.Join(a.home, ".ssh", d.Metadata.UID)
	if fi, err := os.Stat(keyPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("deployment key %s: %v", keyPath, err)
	}
	// Delete: TerminateInstances, then the object goes.
	a.proxy.Reset()
	a.must("delete", "deploy", name, "--wait", "--timeout", "60s")
	if a.proxy.Count("TerminateInstances") < 1 {
		t.Errorf("delete made no TerminateInstances: %v", a.proxy.Counts())
	}
	if _, err := os.Stat(keyPath); !os.IsNotExist(err) {
		t.Errorf("the deployment's SSH key outlived it: %v", err)
	}
	for _, in := range a.instances() {
		if sdkaws.ToString(in.InstanceId) == d2.Status.VM.ID && in.State.Name != types.InstanceStateNameTerminated {
			t.Errorf("instance %s is %s after delete", d2.Status.VM.ID, in.State.Name)
		}
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
	time.Sleep(500 * time.Millisecond)
	a.proxy.Reset()
	time.Sleep(3500 * time.Millisecond) // about three resyncs of 1s
	counts := a.proxy.Counts()
	describes := counts["DescribeInstances"]
	if describes < 2 || describes > 5 {
		t.Errorf("DescribeInstances over ~3 resyncs = %d, want one per resync", describes)
	}
	delete(counts, "DescribeInstances")
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
	time.Sleep(1500 * time.Millisecond) // a resync or two: a duplicate would show
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
