package aws_test

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	ssmtypes "github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
)

// rig is moto behind the fault proxy, a provider talking to the proxy, and
// an SDK client talking to moto directly (an outside observer).
type rig struct {
	proxy   *ec2proxy.Proxy
	prov    *awsprovider.Provider
	outside *ec2.Client
	home    string
	moto    string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	moto := testenv.StartMoto(t)
	proxy, err := ec2proxy.New(moto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	return newRigOn(t, proxy, moto, awsprovider.SSH{Home: testenv.ShortTempDir(t)})
}

// gpuImage is the image the rig's SSM parameter names for GPU instance
// types. (moto, like AWS, refuses to create parameters under /aws/, so
// the rig uses a name of its own.)
const (
	gpuImageParameter = "/anycloud-test/deeplearning-base-ami"
	gpuImage          = "ami-0d1a2b3c4d5e6f708"
)

// newRigOn is a rig whose provider talks to endpoint (a proxy in front of
// moto) with the given SSH settings.
func newRigOn(t *testing.T, proxy *ec2proxy.Proxy, moto string, sshOpts awsprovider.SSH) *rig {
	t.Helper()
	ctx := context.Background()
	clients, err := awsprovider.NewClients(ctx, awsprovider.ClientConfig{
		Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: proxy.URL(),
	})
	if err != nil {
		t.Fatal(err)
	}
	outside, err := awsprovider.NewClients(ctx, awsprovider.ClientConfig{
		Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: moto,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := outside.SSM.PutParameter(ctx, &ssm.PutParameterInput{
		Name: sdkaws.String(gpuImageParameter), Value: sdkaws.String(gpuImage), Type: ssmtypes.ParameterTypeString, Overwrite: sdkaws.Bool(true),
	}); err != nil {
		t.Fatal(err)
	}
	prov := awsprovider.New(awsprovider.Options{
		Client: clients.EC2, SSM: clients.SSM, GPUImageParameter: gpuImageParameter,
		Key: "aws/test/" + clients.Region, Region: clients.Region, Cluster: "c0ffee",
		SSH:   sshOpts,
		Retry: awsprovider.RetryPolicy{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, MaxElapsed: 5 * time.Second},
		IAM:   clients.IAM, STS: clients.STS,
	})
	return &rig{proxy: proxy, prov: prov, outside: outside.EC2, home: sshOpts.Home, moto: moto}
}

func launchReq(name string, attempt int, spot bool) provider.LaunchRequest {
	uid := "uid-" + name
	return provider.LaunchRequest{
		Deployment: name, UID: uid, Attempt: attempt, Token: provider.Token(uid, attempt),
		Image: "ghcr.io/me/train:latest", VMType: "g6e.xlarge", Spot: spot,
		Env: map[string]string{"HF_TOKEN": "CANARY-ec2-5f6e7d"},
	}
}

func (r *rig) instances(t *testing.T) []types.Instance {
	t.Helper()
	out, err := r.outside.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatal(err)
	}
	var all []types.Instance
	for _, res := range out.Reservations {
		all = append(all, res.Instances...)
	}
	return all
}

func tag(inst types.Instance, key string) string {
	for _, tg := range inst.Tags {
		if sdkaws.ToString(tg.Key) == key {
			return sdkaws.ToString(tg.Value)
		}
	}
	return ""
}

func TestSpotLaunchIsOneTaggedRunInstancesAndNoCreateTags(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	vm, err := r.prov.Launch(ctx, launchReq("train", 1, true))
	if err != nil {
		t.Fatal(err)
	}
	if got := r.proxy.Count("RunInstances"); got != 1 {
		t.Errorf("RunInstances calls = %d, want 1", got)
	}
	if got := r.proxy.Count("CreateTags"); got != 0 {
		t.Errorf("CreateTags calls = %d, want 0", got)
	}
	insts := r.instances(t)
	if len(insts) != 1 {
		t.Fatalf("%d instances, want 1", len(insts))
	}
	inst := insts[0]
	if sdkaws.ToString(inst.InstanceId) != vm.ID {
		t.Errorf("instance %s, provider said %s", sdkaws.ToString(inst.InstanceId), vm.ID)
	}
	for k, want := range map[string]string{
		awsprovider.TagManaged: "true", awsprovider.TagDeployment: "train", awsprovider.TagUID: "uid-train",
		awsprovider.TagAttempt: "1", awsprovider.TagCluster: "c0ffee",
	} {
		if got := tag(inst, k); got != want {
			t.Errorf("tag %s = %q, want %q", k, got, want)
		}
	}
	if inst.InstanceLifecycle != types.InstanceLifecycleTypeSpot || vm.Market != "spot" {
		t.Errorf("lifecycle %q market %q, want spot", inst.InstanceLifecycle, vm.Market)
	}
	if string(inst.InstanceType) != "g6e.xlarge" {
		t.Errorf("instance type %s", inst.InstanceType)
	}
	if sdkaws.ToString(inst.ClientToken) != provider.Token("uid-train", 1) {
		t.Errorf("client token %q", sdkaws.ToString(inst.ClientToken))
	}
}

func TestNoSecretValueInUserDataOrAnyRequest(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	req := launchReq("train", 1, false)
	vm, err := r.prov.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.prov.List(ctx); err != nil {
		t.Fatal(err)
	}
	canary := req.Env["HF_TOKEN"]
	if r.proxy.Seen(canary) {
		t.Error("a secret value was sent to EC2")
	}
	out, err := r.outside.DescribeInstanceAttribute(ctx, &ec2.DescribeInstanceAttributeInput{
		InstanceId: sdkaws.String(vm.ID), Attribute: types.InstanceAttributeNameUserData,
	})
	if err != nil {
		t.Fatal(err)
	}
	ud, err := base64.StdEncoding.DecodeString(sdkaws.ToString(out.UserData.Value))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(ud), canary) || !strings.HasPrefix(string(ud), "#cloud-config") {
		t.Errorf("user-data:\n%s", ud)
	}
	// The VM makes its own host key: no private key travels in user-data,
	// which anyone allowed ec2:DescribeInstanceAttribute can read.
	if strings.Contains(string(ud), "PRIVATE KEY") {
		t.Errorf("user-data holds a private key:\n%s", ud)
	}
	if !strings.Contains(string(ud), "ssh-ed25519") {
		t.Errorf("user-data lacks the deployment's keys:\n%s", ud)
	}
}

func TestListIsOneDescribePerThousandAndSeesOnlyThisCluster(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	for i := range 5 {
		if _, err := r.prov.Launch(ctx, launchReq(fmt.Sprintf("d%d", i), 1, false)); err != nil {
			t.Fatal(err)
		}
	}
	// An instance of another control plane, launched from outside.
	if _, err := r.outside.RunInstances(ctx, &ec2.RunInstancesInput{
		ImageId: sdkaws.String("ami-760aaa0f"), MinCount: sdkaws.Int32(1), MaxCount: sdkaws.Int32(1),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{
			{Key: sdkaws.String(awsprovider.TagManaged), Value: sdkaws.String("true")},
			{Key: sdkaws.String(awsprovider.TagCluster), Value: sdkaws.String("other")},
		}}},
	}); err != nil {
		t.Fatal(err)
	}
	r.proxy.Reset()
	vms, err := r.prov.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != 5 {
		t.Errorf("listed %d VMs, want this cluster's 5", len(vms))
	}
	counts := r.proxy.Counts()
	if counts["DescribeInstances"] != 1 || len(counts) != 1 {
		t.Errorf("calls for one listing: %v, want one DescribeInstances", counts)
	}
	for _, vm := range vms {
		if vm.State != provider.StateRunning || vm.UID == "" || vm.Attempt != 1 {
			t.Errorf("vm %+v", vm)
		}
	}
}

func TestThrottlingAndDroppedResponsesAreRetriedWithoutDuplicates(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.proxy.Inject("RunInstances", ec2proxy.Throttle, ec2proxy.Unavailable, ec2proxy.DropResponse)
	start := time.Now()
	vm, err := r.prov.Launch(ctx, launchReq("train", 1, true))
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) < 20*time.Millisecond {
		t.Error("retries did not back off")
	}
	if got := r.proxy.Count("RunInstances"); got != 4 {
		t.Errorf("RunInstances arrivals = %d, want 4 (3 faults, 1 success)", got)
	}
	insts := r.instances(t)
	if len(insts) != 1 || sdkaws.ToString(insts[0].InstanceId) != vm.ID {
		t.Fatalf("instances after retries: %d, want exactly the 1 returned", len(insts))
	}
	// A whole new Launch of the same attempt (a control plane restarted
	// after the call) returns the same instance.
	again, err := r.prov.Launch(ctx, launchReq("train", 1, true))
	if err != nil || again.ID != vm.ID {
		t.Errorf("relaunch of the same attempt: %v %v, want %s", again.ID, err, vm.ID)
	}
	r.proxy.Inject("DescribeInstances", ec2proxy.Throttle, ec2proxy.Throttle)
	if vms, err := r.prov.List(ctx); err != nil || len(vms) != 1 {
		t.Errorf("List through throttling: %d VMs, %v", len(vms), err)
	}
}

func TestPersistentThrottlingIsClassified(t *testing.T) {
	r := newRig(t)
	r.proxy.InjectEvery("RunInstances", 1, ec2proxy.Throttle)
	_, err := r.prov.Launch(context.Background(), launchReq("train", 1, false))
	if !errors.Is(err, provider.ErrThrottled) || !strings.Contains(err.Error(), "RequestLimitExceeded") {
		t.Errorf("err = %v, want ErrThrottled naming RequestLimitExceeded", err)
	}
}

func TestTerminateIsIdempotentAndListShowsWhy(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	vm, err := r.prov.Launch(ctx, launchReq("train", 1, false))
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.prov.Terminate(ctx, vm.ID); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.prov.Terminate(ctx, "i-0123456789abcdef0"); err != nil {
		t.Errorf("terminate of an unknown instance: %v", err)
	}
	vms, _ := r.prov.List(ctx)
	if len(vms) != 1 || vms[0].State != provider.StateTerminated || vms[0].Reason == "" {
		t.Errorf("after terminate: %+v", vms)
	}
}

// TestListPagesAtMaxResults1000 puts 1,001 reservations of ours in moto
// (from outside, in parallel) and lists them: two DescribeInstances pages
// of at most 1000, and every instance seen.
func TestListPagesAtMaxResults1000(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 1,001 instances")
	}
	r := newRig(t)
	ctx := context.Background()
	const n = 1001
	jobs := make(chan int, n)
	for i := range n {
		jobs <- i
	}
	close(jobs)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				_, err := r.outside.RunInstances(ctx, &ec2.RunInstancesInput{
					ImageId: sdkaws.String("ami-760aaa0f"), MinCount: sdkaws.Int32(1), MaxCount: sdkaws.Int32(1),
					TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{
						{Key: sdkaws.String(awsprovider.TagManaged), Value: sdkaws.String("true")},
						{Key: sdkaws.String(awsprovider.TagCluster), Value: sdkaws.String("c0ffee")},
						{Key: sdkaws.String(awsprovider.TagUID), Value: sdkaws.String(fmt.Sprintf("uid-%d", i))},
						{Key: sdkaws.String(awsprovider.TagAttempt), Value: sdkaws.String("1")},
					}}},
				})
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	r.proxy.Reset()
	vms, err := r.prov.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(vms) != n {
		t.Errorf("listed %d, want %d", len(vms), n)
	}
	if got := r.proxy.Count("DescribeInstances"); got != 2 {
		t.Errorf("DescribeInstances pages = %d, want ceil(%d/1000) = 2", got, n)
	}
}

func TestEveryLaunchRequiresIMDSv2(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	if _, err := r.prov.Launch(ctx, launchReq("imds", 1, false)); err != nil {
		t.Fatal(err)
	}
	opened := launchReq("opened", 1, false)
	opened.AWS = &manifests.DeploymentAWS{MetadataHopLimit: 2}
	if _, err := r.prov.Launch(ctx, opened); err != nil {
		t.Fatal(err)
	}
	for _, inst := range r.instances(t) {
		mo := inst.MetadataOptions
		want := int32(1)
		if tag(inst, awsprovider.TagDeployment) == "opened" {
			want = 2
		}
		if mo == nil || mo.HttpTokens != types.HttpTokensStateRequired || sdkaws.ToInt32(mo.HttpPutResponseHopLimit) != want ||
			mo.HttpEndpoint != types.InstanceMetadataEndpointStateEnabled {
			t.Errorf("%s: metadata options %+v, want IMDSv2 required with hop limit %d", tag(inst, awsprovider.TagDeployment), mo, want)
		}
	}
}

func TestGPUInstanceTypesGetTheDeepLearningImage(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	gpu := launchReq("gpu", 1, true) // g6e.xlarge: one L40S
	cpu := launchReq("cpu", 1, false)
	cpu.VMType = "t3.micro"
	own := launchReq("own", 1, false)
	own.AWS = &manifests.DeploymentAWS{ImageID: "ami-0123456789abcdef0"}
	for _, req := range []provider.LaunchRequest{gpu, cpu, own, launchReq("gpu2", 1, true)} {
		if _, err := r.prov.Launch(ctx, req); err != nil {
			t.Fatalf("launch %s: %v", req.Deployment, err)
		}
	}
	images := map[string]string{}
	for _, inst := range r.instances(t) {
		images[tag(inst, awsprovider.TagDeployment)] = sdkaws.ToString(inst.ImageId)
	}
	if images["gpu"] != gpuImage || images["gpu2"] != gpuImage {
		t.Errorf("GPU instances got images %s, %s; want the SSM parameter's %s", images["gpu"], images["gpu2"], gpuImage)
	}
	if images["cpu"] == gpuImage || !strings.HasPrefix(images["cpu"], "ami-") {
		t.Errorf("a CPU instance got image %q, want Amazon Linux", images["cpu"])
	}
	if images["own"] != own.AWS.ImageID {
		t.Errorf("spec.aws.imageId %s was not used: %s", own.AWS.ImageID, images["own"])
	}
	// Each type is asked about once, the GPU image resolved once.
	if got := r.proxy.Count("DescribeInstanceTypes"); got != 2 {
		t.Errorf("DescribeInstanceTypes calls = %d, want one per instance type (2)", got)
	}
	if got := r.proxy.Count("GetParameter"); got != 1 {
		t.Errorf("SSM calls = %d, want 1", got)
	}
}

func TestAGPUTypeWithoutItsImageParameterIsAnInvalidLaunch(t *testing.T) {
	moto := testenv.StartMoto(t)
	proxy, err := ec2proxy.New(moto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { proxy.Close() })
	r := newRigOn(t, proxy, moto, awsprovider.SSH{Home: testenv.ShortTempDir(t)})
	clients, _ := awsprovider.NewClients(context.Background(), awsprovider.ClientConfig{
		Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: proxy.URL(),
	})
	prov := awsprovider.New(awsprovider.Options{
		Client: clients.EC2, SSM: clients.SSM, GPUImageParameter: "/anycloud-test/missing", Key: "aws/test/us-east-1", Region: "us-east-1", Cluster: "c0ffee",
		Retry: awsprovider.RetryPolicy{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond, MaxElapsed: time.Second},
	})
	_, err = prov.Launch(context.Background(), launchReq("gpu", 1, true))
	if !errors.Is(err, provider.ErrInvalid) || !strings.Contains(err.Error(), "/anycloud-test/missing") {
		t.Errorf("err = %v, want ErrInvalid naming the parameter", err)
	}
	if n := len(r.instances(t)); n != 0 {
		t.Errorf("%d instances launched without an image", n)
	}
}
