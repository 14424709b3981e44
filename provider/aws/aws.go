// Package aws is the EC2 provider: a VM is an EC2 instance, launched with
// RunInstances (spot through InstanceMarketOptions), tagged at launch so
// that no CreateTags call is needed, listed with one filtered, paginated
// DescribeInstances per resync, and bootstrapped over SSH (package
// bootstrap) with a per-deployment key and a pinned host key.
//
// The vocabulary: EC2API is the narrow slice of the SDK client that is
// used, with the SDK's own signatures, so *ec2.Client satisfies it;
// Provider implements provider.Provider on top of it; classify turns SDK
// errors into the provider sentinels in one place; retry does short,
// cloud-side retries of throttling and transient failures with
// cenkalti/backoff (the SDK's own retryer is off, so a failure is never
// retried twice over); limits keeps calls within EC2's request buckets.
package aws

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/smithy-go"
	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
)

// EC2API is what the provider uses of the EC2 client.
type EC2API interface {
	RunInstances(ctx context.Context, params *ec2.RunInstancesInput, optFns ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	DescribeInstances(ctx context.Context, params *ec2.DescribeInstancesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	TerminateInstances(ctx context.Context, params *ec2.TerminateInstancesInput, optFns ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	DescribeImages(ctx context.Context, params *ec2.DescribeImagesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeImagesOutput, error)
	DescribeInstanceTypes(ctx context.Context, params *ec2.DescribeInstanceTypesInput, optFns ...func(*ec2.Options)) (*ec2.DescribeInstanceTypesOutput, error)
	DescribeSubnets(ctx context.Context, params *ec2.DescribeSubnetsInput, optFns ...func(*ec2.Options)) (*ec2.DescribeSubnetsOutput, error)
	GetConsoleOutput(ctx context.Context, params *ec2.GetConsoleOutputInput, optFns ...func(*ec2.Options)) (*ec2.GetConsoleOutputOutput, error)
}

// SSMAPI is what the provider uses of the SSM client: the public
// parameters that name AWS's current images.
type SSMAPI interface {
	GetParameter(ctx context.Context, params *ssm.GetParameterInput, optFns ...func(*ssm.Options)) (*ssm.GetParameterOutput, error)
}

// Tags on every instance anycloud launches.
const (
	TagManaged    = "anycloud:managed"
	TagDeployment = "anycloud:deployment"
	TagUID        = "anycloud:uid"
	TagAttempt    = "anycloud:attempt"
	TagCluster    = "anycloud:cluster"
)

// TagScope names, on the interruption queue and rules, the scope they
// serve: "aws/<credentials>/<region>".
const TagScope = "anycloud:scope"

// DefaultVMType is used when a deployment names none.
const DefaultVMType = "t3.micro"

// DefaultGPUImageParameter is the public SSM parameter naming the current
// AWS Deep Learning Base AMI (NVIDIA driver, Docker and the NVIDIA
// container toolkit, Ubuntu 22.04): the default image of instance types
// with GPUs.
const DefaultGPUImageParameter = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"

// DefaultMetadataHopLimit is the IMDSv2 response hop limit of a launch
// that asks for none: 1 keeps the instance's credentials out of reach of
// containers on a bridge network.
const DefaultMetadataHopLimit = 1

// Options configure a Provider.
type Options struct {
	Client EC2API
	// SSM resolves the default GPU image; without it, a GPU instance type
	// needs spec.aws.imageId.
	SSM SSMAPI
	// GPUImageParameter names the SSM parameter holding the default image
	// of GPU instance types (default DefaultGPUImageParameter).
	GPUImageParameter string
	// Key names the scope: credentials and region.
	Key    string
	Region string
	// Cluster is the control plane's id, tagged on every instance and
	// filtered on in List.
	Cluster string
	// SSH says how VMs are reached for the bootstrap, logs and `anycloud
	// ssh`; its UserData renders each launch's user-data.
	SSH SSH
	// Retry bounds the short retries of one call; zero takes defaults
	// (about 20s in all).
	Retry RetryPolicy
	// Limits are the request buckets of the scope; nil makes full ones.
	// Pass the old provider's to a provider that replaces it.
	Limits *Limits
	// Requests counts every request sent, by action and outcome (ok,
	// throttled, error), labelled provider "aws"; nil counts nothing.
	Requests *prometheus.CounterVec
	// Interruptions says how the scope hears EC2's events.
	Interruptions Interruptions
	// IAM makes the deployments' managed roles; STS mints the session
	// credentials of buckets in this account for VMs of other accounts'
	// deployments. Without them, buckets need iamRole: an instance
	// profile ARN.
	IAM IAMAPI
	STS STSAPI
	// S3Endpoint overrides the S3 endpoint the VMs' rclone uses (the
	// credentials' endpointURL: an emulator); empty for AWS's own.
	S3Endpoint string
}

// RetryPolicy bounds cloud-side retries.
type RetryPolicy struct {
	Initial, Max, MaxElapsed time.Duration
}

// Provider launches deployments as EC2 instances.
type Provider struct {
	ec2           EC2API
	ssm           SSMAPI
	gpuParam      string
	key           string
	region        string
	cluster       string
	ssh           SSH
	retry         RetryPolicy
	limits        *Limits
	capacity      *capacity
	requests      *prometheus.CounterVec
	interruptions Interruptions
	iam           IAMAPI
	sts           STSAPI
	s3Endpoint    string

	mu     sync.Mutex
	images map[string]string // default AMI per kind ("x86_64", "gpu"), resolved once
	gpus   map[string]bool   // whether an instance type has GPUs, asked once
}

// New returns a provider over the given client.
func New(o Options) *Provider {
	if o.Retry.Initial == 0 {
		o.Retry.Initial = 200 * time.Millisecond
	}
	if o.Retry.Max == 0 {
		o.Retry.Max = 5 * time.Second
	}
	if o.Retry.MaxElapsed == 0 {
		o.Retry.MaxElapsed = 20 * time.Second
	}
	if o.Limits == nil {
		o.Limits = NewLimits()
	}
	if o.GPUImageParameter == "" {
		o.GPUImageParameter = DefaultGPUImageParameter
	}
	return &Provider{
		ec2: o.Client, ssm: o.SSM, gpuParam: o.GPUImageParameter, key: o.Key, region: o.Region, cluster: o.Cluster, ssh: o.SSH,
		retry: o.Retry, limits: o.Limits, requests: o.Requests, capacity: newCapacity(), interruptions: o.Interruptions, images: map[string]string{}, gpus: map[string]bool{},
		iam: o.IAM, sts: o.STS, s3Endpoint: o.S3Endpoint,
	}
}

// Limits are the provider's request buckets, for a provider that
// replaces it (Options.Limits).
func (p *Provider) Limits() *Limits { return p.limits }

// Key implements provider.Provider.
func (p *Provider) Key() string { return p.key }

// Launch implements provider.Provider: one RunInstances, tagged, with the
// attempt's ClientToken, so that a retry (ours, or a whole reconcile's
// after a crash) returns the same instance. Secret values are not part of
// the request: they reach the VM only through the SSH bootstrap.
func (p *Provider) Launch(ctx context.Context, req provider.LaunchRequest) (provider.VM, error) {
	vmType := vmType(req)
	a := awsSettings(req)
	image := a.ImageID
	if image == "" {
		gpu, err := p.hasGPUs(ctx, vmType)
		if err != nil {
			return provider.VM{}, err
		}
		if image, err = p.defaultImage(ctx, gpu); err != nil {
			return provider.VM{}, err
		}
	}
	hops := a.MetadataHopLimit
	if hops == 0 {
		hops = DefaultMetadataHopLimit
	}
	in := &ec2.RunInstancesInput{
		ImageId:      sdkaws.String(image),
		InstanceType: types.InstanceType(vmType),
		MinCount:     sdkaws.Int32(1),
		MaxCount:     sdkaws.Int32(1),
		ClientToken:  sdkaws.String(req.Token),
		// IMDSv2 only: a request to the metadata service needs a session
		// token, which a forged request from a workload (SSRF) cannot get.
		MetadataOptions: &types.InstanceMetadataOptionsRequest{
			HttpEndpoint:            types.InstanceMetadataEndpointStateEnabled,
			HttpTokens:              types.HttpTokensStateRequired,
			HttpPutResponseHopLimit: sdkaws.Int32(int32(hops)),
		},
		TagSpecifications: []types.TagSpecification{{
			ResourceType: types.ResourceTypeInstance,
			Tags: []types.Tag{
				{Key: sdkaws.String("Name"), Value: sdkaws.String("anycloud-" + req.Deployment)},
				{Key: sdkaws.String(TagManaged), Value: sdkaws.String("true")},
				{Key: sdkaws.String(TagDeployment), Value: sdkaws.String(req.Deployment)},
				{Key: sdkaws.String(TagUID), Value: sdkaws.String(req.UID)},
				{Key: sdkaws.String(TagAttempt), Value: sdkaws.String(strconv.Itoa(req.Attempt))},
				{Key: sdkaws.String(TagCluster), Value: sdkaws.String(p.cluster)},
			},
		}},
	}
	if len(a.SecurityGroupIDs) > 0 {
		in.SecurityGroupIds = a.SecurityGroupIDs
	}
	profile, role, err := p.instanceProfile(ctx, req)
	if err != nil {
		return provider.VM{}, err
	}
	if profile != "" {
		in.IamInstanceProfile = &types.IamInstanceProfileSpecification{Arn: sdkaws.String(profile)}
	}
	if p.ssh.Home != "" {
		launchReq := req
		launchReq.Env = nil // user-data never sees a value
		ud, err := p.ssh.UserData(launchReq)
		if err != nil {
			return provider.VM{}, fmt.Errorf("user-data: %w", err)
		}
		in.UserData = sdkaws.String(base64.StdEncoding.EncodeToString(ud))
	}
	vm, err := p.place(ctx, req, in)
	if err != nil {
		return vm, err
	}
	vm.InstanceProfile, vm.Role = profile, role
	return vm, nil
}

// spotOptions asks for a one-time spot instance, terminated when taken.
var spotOptions = &types.InstanceMarketOptionsRequest{
	MarketType: types.MarketTypeSpot,
	SpotOptions: &types.SpotMarketOptions{
		SpotInstanceType:             types.SpotInstanceTypeOneTime,
		InstanceInterruptionBehavior: types.InstanceInterruptionBehaviorTerminate,
	},
}

// List implements provider.Provider: DescribeInstances filtered on our
// tags, 1000 per page, every state (a terminated instance tells why).
func (p *Provider) List(ctx context.Context) ([]provider.VM, error) {
	in := &ec2.DescribeInstancesInput{
		MaxResults: sdkaws.Int32(1000),
		Filters: []types.Filter{
			{Name: sdkaws.String("tag:" + TagManaged), Values: []string{"true"}},
			{Name: sdkaws.String("tag:" + TagCluster), Values: []string{p.cluster}},
		},
	}
	var vms []provider.VM
	for {
		var out *ec2.DescribeInstancesOutput
		err := p.call(ctx, p.limits.describe, "DescribeInstances", func(ctx context.Context) error {
			var err error
			out, err = p.ec2.DescribeInstances(ctx, in)
			return err
		})
		if err != nil {
			return nil, err
		}
		for _, r := range out.Reservations {
			for _, inst := range r.Instances {
				vms = append(vms, p.vm(inst))
			}
		}
		if out.NextToken == nil || *out.NextToken == "" {
			return vms, nil
		}
		in.NextToken = out.NextToken
	}
}

// describeBatch is how many instance ids one Describe call filters on:
// EC2 takes at most 200 values per filter.
const describeBatch = 200

// Describe implements provider.Describer: DescribeInstances filtered on
// the ids (a filter, unlike InstanceIds, does not fail the whole call for
// an id EC2 does not know yet), 200 ids a call.
func (p *Provider) Describe(ctx context.Context, ids []string) ([]provider.VM, error) {
	var vms []provider.VM
	for len(ids) > 0 {
		batch := ids[:min(len(ids), describeBatch)]
		ids = ids[len(batch):]
		in := &ec2.DescribeInstancesInput{
			MaxResults: sdkaws.Int32(1000),
			Filters: []types.Filter{
				{Name: sdkaws.String("instance-id"), Values: batch},
				{Name: sdkaws.String("tag:" + TagCluster), Values: []string{p.cluster}},
			},
		}
		for {
			var out *ec2.DescribeInstancesOutput
			err := p.call(ctx, p.limits.describe, "DescribeInstances", func(ctx context.Context) error {
				var err error
				out, err = p.ec2.DescribeInstances(ctx, in)
				return err
			})
			if err != nil {
				return nil, err
			}
			for _, r := range out.Reservations {
				for _, inst := range r.Instances {
					vms = append(vms, p.vm(inst))
				}
			}
			if out.NextToken == nil || *out.NextToken == "" {
				break
			}
			in.NextToken = out.NextToken
		}
	}
	return vms, nil
}

// Terminate implements provider.Provider. An instance that is already
// gone is success.
func (p *Provider) Terminate(ctx context.Context, id string) error {
	err := p.call(ctx, p.limits.mutate, "TerminateInstances", func(ctx context.Context) error {
		_, err := p.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}})
		return err
	})
	if errors.Is(err, provider.ErrNotFound) {
		return nil
	}
	return err
}

// crashCodes are the EC2 state reasons of an instance that ended from
// within (provider.VM.Crashed): it shut itself down, or failed to start.
// Spot terminations and user-initiated ones are not crashes.
var crashCodes = map[string]bool{
	"Client.InstanceInitiatedShutdown": true,
	"Server.InternalError":             true,
	"Client.InternalError":             true,
}

// vm converts an SDK instance to the domain type.
func (p *Provider) vm(inst types.Instance) provider.VM {
	vm := provider.VM{ID: sdkaws.ToString(inst.InstanceId), Market: "on-demand"}
	for _, t := range inst.Tags {
		switch sdkaws.ToString(t.Key) {
		case TagDeployment:
			vm.Deployment = sdkaws.ToString(t.Value)
		case TagUID:
			vm.UID = sdkaws.ToString(t.Value)
		case TagAttempt:
			vm.Attempt, _ = strconv.Atoi(sdkaws.ToString(t.Value))
		}
	}
	if inst.InstanceLifecycle == types.InstanceLifecycleTypeSpot {
		vm.Market = "spot"
	}
	if inst.PublicIpAddress != nil {
		vm.Address = *inst.PublicIpAddress
	} else if inst.PrivateIpAddress != nil {
		vm.Address = *inst.PrivateIpAddress
	}
	if inst.LaunchTime != nil {
		vm.LaunchedAt = inst.LaunchTime.UTC()
	}
	if inst.IamInstanceProfile != nil {
		vm.InstanceProfile = sdkaws.ToString(inst.IamInstanceProfile.Arn)
	}
	if inst.State != nil {
		switch inst.State.Name {
		case types.InstanceStateNamePending:
			vm.State = provider.StatePending
		case types.InstanceStateNameRunning:
			vm.State = provider.StateRunning
		case types.InstanceStateNameStopping:
			vm.State = provider.StateStopping
		case types.InstanceStateNameStopped:
			vm.State = provider.StateStopped
		default: // shutting-down, terminated
			vm.State = provider.StateTerminated
		}
	}
	if vm.State != provider.StateRunning {
		if inst.StateReason != nil {
			vm.Crashed = crashCodes[sdkaws.ToString(inst.StateReason.Code)]
		}
		switch {
		case inst.StateReason != nil && sdkaws.ToString(inst.StateReason.Message) != "":
			vm.Reason = sdkaws.ToString(inst.StateReason.Message)
		case sdkaws.ToString(inst.StateTransitionReason) != "":
			vm.Reason = sdkaws.ToString(inst.StateTransitionReason)
		default:
			vm.Reason = "instance " + string(inst.State.Name)
		}
	}
	return vm
}

// awsSettings are the request's aws settings; none is all defaults.
func awsSettings(req provider.LaunchRequest) manifests.DeploymentAWS {
	if req.AWS == nil {
		return manifests.DeploymentAWS{}
	}
	return *req.AWS
}

// vmType is the instance type a request asks for.
func vmType(req provider.LaunchRequest) string {
	if req.VMType == "" {
		return DefaultVMType
	}
	return req.VMType
}

// hasGPUs reports whether instance type t has GPUs, asking EC2 once per
// type and provider.
func (p *Provider) hasGPUs(ctx context.Context, t string) (bool, error) {
	p.mu.Lock()
	gpu, ok := p.gpus[t]
	p.mu.Unlock()
	if ok {
		return gpu, nil
	}
	var out *ec2.DescribeInstanceTypesOutput
	err := p.call(ctx, p.limits.describe, "DescribeInstanceTypes", func(ctx context.Context) error {
		var err error
		out, err = p.ec2.DescribeInstanceTypes(ctx, &ec2.DescribeInstanceTypesInput{InstanceTypes: []types.InstanceType{types.InstanceType(t)}})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("instance type %s: %w", t, err)
	}
	if len(out.InstanceTypes) == 0 {
		return false, fmt.Errorf("instance type %s does not exist in %s: %w", t, p.region, provider.ErrInvalid)
	}
	info := out.InstanceTypes[0].GpuInfo
	gpu = info != nil && len(info.Gpus) > 0
	p.mu.Lock()
	p.gpus[t] = gpu
	p.mu.Unlock()
	return gpu, nil
}

// defaultImage finds the default image, once per provider: for GPU
// instance types the Deep Learning Base AMI named by the SSM parameter,
// otherwise the newest Amazon Linux.
func (p *Provider) defaultImage(ctx context.Context, gpu bool) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if gpu {
		return p.gpuImageLocked(ctx)
	}
	if id := p.images["x86_64"]; id != "" {
		return id, nil
	}
	for _, pattern := range []string{"al2023-ami-2023.*-x86_64", "amzn2-ami-hvm-*-x86_64-gp2"} {
		var out *ec2.DescribeImagesOutput
		err := p.call(ctx, p.limits.describe, "DescribeImages", func(ctx context.Context) error {
			var err error
			out, err = p.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{
				Owners: []string{"amazon"},
				Filters: []types.Filter{
					{Name: sdkaws.String("name"), Values: []string{pattern}},
					{Name: sdkaws.String("architecture"), Values: []string{"x86_64"}},
					{Name: sdkaws.String("state"), Values: []string{"available"}},
				},
			})
			return err
		})
		if err != nil {
			return "", fmt.Errorf("find the default image: %w", err)
		}
		imgs := out.Images
		slices.SortFunc(imgs, func(a, b types.Image) int {
			return strings.Compare(sdkaws.ToString(b.CreationDate), sdkaws.ToString(a.CreationDate))
		})
		if len(imgs) > 0 {
			p.images["x86_64"] = sdkaws.ToString(imgs[0].ImageId)
			return p.images["x86_64"], nil
		}
	}
	return "", fmt.Errorf("no Amazon Linux image found in %s; set spec.aws.imageId: %w", p.region, provider.ErrInvalid)
}

// gpuImageLocked resolves the GPU image's SSM parameter; p.mu is held.
func (p *Provider) gpuImageLocked(ctx context.Context) (string, error) {
	if id := p.images["gpu"]; id != "" {
		return id, nil
	}
	if p.ssm == nil {
		return "", fmt.Errorf("a GPU instance type needs an image with the NVIDIA driver; set spec.aws.imageId: %w", provider.ErrInvalid)
	}
	var out *ssm.GetParameterOutput
	err := p.call(ctx, p.limits.ssm, "GetParameter", func(ctx context.Context) error {
		var err error
		out, err = p.ssm.GetParameter(ctx, &ssm.GetParameterInput{Name: sdkaws.String(p.gpuParam)})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("find the GPU image (SSM parameter %s): %w", p.gpuParam, err)
	}
	id := ""
	if out.Parameter != nil {
		id = sdkaws.ToString(out.Parameter.Value)
	}
	if !strings.HasPrefix(id, "ami-") {
		return "", fmt.Errorf("SSM parameter %s in %s holds %q, not an image id; set spec.aws.imageId: %w", p.gpuParam, p.region, id, provider.ErrInvalid)
	}
	p.images["gpu"] = id
	return id, nil
}

// call runs one API call within its rate bucket, retrying throttling and
// transient failures briefly with exponential back-off. What still fails
// is classified and returned; the controller's queue retries from there.
func (p *Provider) call(ctx context.Context, b *rate.Limiter, op string, fn func(context.Context) error) error {
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = p.retry.Initial, p.retry.Max, p.retry.MaxElapsed
	attempt := func() error {
		if err := b.Wait(ctx); err != nil {
			return backoff.Permanent(err)
		}
		err := classify(fn(ctx), op, p.region)
		p.count(op, err)
		if err == nil || retryable(err) {
			return err
		}
		return backoff.Permanent(err)
	}
	return backoff.Retry(attempt, backoff.WithContext(bo, ctx))
}

// count records one request's outcome.
func (p *Provider) count(op string, err error) {
	if p.requests == nil {
		return
	}
	outcome := "ok"
	switch {
	case errors.Is(err, provider.ErrThrottled):
		outcome = "throttled"
	case err != nil:
		outcome = "error"
	}
	p.requests.WithLabelValues("aws", op, outcome).Inc()
}

// retryable reports whether a short retry may help.
func retryable(err error) bool {
	return errors.Is(err, provider.ErrThrottled) || errors.Is(err, provider.ErrUnavailable)
}

// classify maps SDK errors to provider sentinels, keeping EC2's code and
// message for people.
func classify(err error, op, region string) error {
	if err == nil {
		return nil
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code := ae.ErrorCode()
		e := &APIError{Op: op, Region: region, Code: code, Message: ae.ErrorMessage()}
		switch {
		case code == "RequestLimitExceeded" || code == "Throttling" || code == "ThrottlingException":
			e.kind = provider.ErrThrottled
		case code == "InsufficientInstanceCapacity" || code == "InsufficientCapacity" || code == "InsufficientHostCapacity" ||
			code == "MaxSpotInstanceCountExceeded" || code == "SpotMaxPriceTooLow" || code == "InsufficientFreeAddressesInSubnet":
			e.kind = provider.ErrCapacity
		case code == "IdempotentInstanceTerminated":
			e.kind = provider.ErrAttemptSpent
		case strings.HasPrefix(code, "InvalidInstanceID") || code == "NoSuchEntity":
			e.kind = provider.ErrNotFound
		case code == "Unavailable" || code == "ServiceUnavailable" || code == "InternalError" || code == "InternalFailure" || code == "RequestTimeout":
			e.kind = provider.ErrUnavailable
		case code == "ParameterNotFound" || code == "InvalidInstanceType":
			e.kind = provider.ErrInvalid
		case code == "IdempotentParameterMismatch" || strings.HasPrefix(code, "InvalidAMIID") ||
			code == "InvalidParameterValue" || code == "InvalidParameterCombination" || code == "Unsupported" ||
			code == "UnauthorizedOperation" || code == "AuthFailure" || code == "OptInRequired":
			e.kind = provider.ErrInvalid
		default:
			var re interface{ HTTPStatusCode() int }
			if errors.As(err, &re) && re.HTTPStatusCode() >= 500 {
				e.kind = provider.ErrUnavailable
			}
		}
		return e
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	// Transport failures: refused connections, dropped responses, a 5xx
	// with no EC2 error document.
	return fmt.Errorf("%s in %s: %w: %v", op, region, provider.ErrUnavailable, err)
}

// APIError is an error of the cloud's API, classified: it names the call,
// the region and the cloud's code and message, and is (errors.Is) the
// provider sentinel of its kind, if any.
type APIError struct {
	Op, Region, Code, Message string
	kind                      error
}

func (e *APIError) Error() string {
	msg := fmt.Sprintf("%s in %s: %s: %s", e.Op, e.Region, e.Code, e.Message)
	if e.kind != nil {
		msg += ": " + e.kind.Error()
	}
	return msg
}

func (e *APIError) Unwrap() error { return e.kind }

var (
	_ provider.Provider  = (*Provider)(nil)
	_ provider.Describer = (*Provider)(nil)
)
