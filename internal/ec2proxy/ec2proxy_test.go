package ec2proxy_test

import (
	"context"
	"encoding/base64"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"github.com/google/go-cmp/cmp"

	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/anycloud/anycloud/internal/testenv"
)

// env is a moto of the test's own, a Proxy in front of it, a client
// through the proxy and a client straight to moto, whose calls the proxy
// neither counts nor disturbs.
type env struct {
	proxy  *ec2proxy.Proxy
	client *ec2.Client
	direct *ec2.Client
	image  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	t.Parallel()
	moto := testenv.StartMoto(t)
	p, err := ec2proxy.New(moto)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	e := &env{proxy: p, client: newClient(p.URL(), "us-east-1", 1), direct: newClient(moto, "us-east-1", 1)}
	e.image = amazonImage(t, e.direct)
	return e
}

func newClient(endpoint, region string, attempts int) *ec2.Client {
	return ec2.New(ec2.Options{
		Region:           region,
		BaseEndpoint:     aws.String(endpoint),
		Credentials:      credentials.NewStaticCredentialsProvider("testing", "testing", ""),
		RetryMaxAttempts: attempts,
	})
}

// amazonImage is an AMI that moto ships, owned by Amazon.
func amazonImage(t *testing.T, c *ec2.Client) string {
	t.Helper()
	out, err := c.DescribeImages(context.Background(), &ec2.DescribeImagesInput{
		Filters: []types.Filter{
			{Name: aws.String("owner-alias"), Values: []string{"amazon"}},
			{Name: aws.String("name"), Values: []string{"amzn-ami-hvm-*"}},
		},
	})
	if err != nil {
		t.Fatalf("describe images: %v", err)
	}
	if len(out.Images) == 0 {
		t.Fatal("moto has no amzn-ami-hvm-* image owned by amazon")
	}
	return aws.ToString(out.Images[0].ImageId)
}

func (e *env) runInput(token string) *ec2.RunInstancesInput {
	in := &ec2.RunInstancesInput{
		ImageId:      aws.String(e.image),
		InstanceType: types.InstanceTypeT3Micro,
		MinCount:     aws.Int32(1),
		MaxCount:     aws.Int32(1),
	}
	if token != "" {
		in.ClientToken = aws.String(token)
	}
	return in
}

// instances is every instance in moto, asked directly.
func (e *env) instances(t *testing.T) []types.Instance {
	t.Helper()
	out, err := e.direct.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{})
	if err != nil {
		t.Fatalf("describe instances directly: %v", err)
	}
	var all []types.Instance
	for _, r := range out.Reservations {
		all = append(all, r.Instances...)
	}
	return all
}

func (e *env) withToken(t *testing.T, token string) []string {
	t.Helper()
	var ids []string
	for _, i := range e.instances(t) {
		if aws.ToString(i.ClientToken) == token {
			ids = append(ids, aws.ToString(i.InstanceId))
		}
	}
	return ids
}

func launchedID(t *testing.T, out *ec2.RunInstancesOutput) string {
	t.Helper()
	if len(out.Instances) != 1 {
		t.Fatalf("RunInstances returned %d instances, want 1", len(out.Instances))
	}
	return aws.ToString(out.Instances[0].InstanceId)
}

func describe(c *ec2.Client) error {
	_, err := c.DescribeInstances(context.Background(), &ec2.DescribeInstancesInput{})
	return err
}

// apiCode is the EC2 error code of err, or "" if err is not an EC2 error.
func apiCode(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return api.ErrorCode()
	}
	return ""
}

func TestCountsEveryActionThatArrives(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.client.RunInstances(ctx, e.runInput("")); err != nil {
		t.Fatalf("run instances: %v", err)
	}
	for range 2 {
		if err := describe(e.client); err != nil {
			t.Fatalf("describe instances: %v", err)
		}
	}
	want := map[string]int{"RunInstances": 1, "DescribeInstances": 2}
	if diff := cmp.Diff(want, e.proxy.Counts()); diff != "" {
		t.Errorf("Counts (-want +got):\n%s", diff)
	}
	for action, n := range want {
		if got := e.proxy.Count(action); got != n {
			t.Errorf("Count(%s) = %d, want %d", action, got, n)
		}
		if got := e.proxy.Forwarded(action); got != n {
			t.Errorf("Forwarded(%s) = %d, want %d", action, got, n)
		}
	}
	if got := e.proxy.Count(ec2proxy.AnyAction); got != 3 {
		t.Errorf("Count(AnyAction) = %d, want 3", got)
	}
	if got := len(e.proxy.Bodies()); got != 3 {
		t.Errorf("kept %d bodies, want 3", got)
	}

	e.proxy.Reset()
	if got := e.proxy.Counts(); len(got) != 0 {
		t.Errorf("Counts after Reset = %v, want none", got)
	}
	if got := e.proxy.Bodies(); len(got) != 0 {
		t.Errorf("%d bodies after Reset, want none", len(got))
	}
}

func TestErrorFaultsAnswerLikeEC2WithoutForwarding(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		fault  ec2proxy.Fault
		status int
		code   string
	}{
		{ec2proxy.Throttle, 400, "RequestLimitExceeded"},
		{ec2proxy.Unavailable, 503, "Unavailable"},
		{ec2proxy.InternalError, 500, "InternalError"},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			e.proxy.Reset()
			e.proxy.Inject("DescribeInstances", tc.fault)
			err := describe(e.client)
			if got := apiCode(err); got != tc.code {
				t.Fatalf("error code = %q (%v), want %s", got, err, tc.code)
			}
			var re *awshttp.ResponseError
			if !errors.As(err, &re) || re.HTTPStatusCode() != tc.status {
				t.Errorf("error %v: want HTTP status %d", err, tc.status)
			}
			if err := describe(e.client); err != nil {
				t.Errorf("the request after the fault: %v", err)
			}
			if c, f := e.proxy.Count("DescribeInstances"), e.proxy.Forwarded("DescribeInstances"); c != 2 || f != 1 {
				t.Errorf("Count, Forwarded = %d, %d; want 2, 1", c, f)
			}
		})
	}
}

func TestFaultsAreConsumedInOrderActionBeforeAny(t *testing.T) {
	e := newEnv(t)
	e.proxy.Inject(ec2proxy.AnyAction, ec2proxy.InternalError)
	e.proxy.Inject("DescribeInstances", ec2proxy.Unavailable, ec2proxy.Throttle)
	if got := e.proxy.Pending("DescribeInstances"); got != 2 {
		t.Errorf("Pending = %d, want 2", got)
	}
	var got []string
	for range 4 {
		got = append(got, apiCode(describe(e.client)))
	}
	want := []string{"Unavailable", "RequestLimitExceeded", "InternalError", ""}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("error codes (-want +got):\n%s", diff)
	}
}

func TestInjectEveryHitsEveryNthRequest(t *testing.T) {
	e := newEnv(t)
	e.proxy.InjectEvery("DescribeInstances", 3, ec2proxy.Throttle)
	var got []bool
	for range 6 {
		got = append(got, apiCode(describe(e.client)) == "RequestLimitExceeded")
	}
	if diff := cmp.Diff([]bool{false, false, true, false, false, true}, got); diff != "" {
		t.Errorf("throttled (-want +got):\n%s", diff)
	}
	e.proxy.ClearFaults()
	for range 3 {
		if err := describe(e.client); err != nil {
			t.Errorf("after ClearFaults: %v", err)
		}
	}
}

func TestInjectRandomRepeatsForTheSameSeed(t *testing.T) {
	e := newEnv(t)
	other, err := ec2proxy.New(e.proxy.Target())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	otherClient := newClient(other.URL(), "us-east-1", 1)
	e.proxy.InjectRandom(ec2proxy.AnyAction, 0.5, 42, ec2proxy.Throttle)
	other.InjectRandom(ec2proxy.AnyAction, 0.5, 42, ec2proxy.Throttle)
	var a, b []string
	for range 20 {
		a = append(a, apiCode(describe(e.client)))
		b = append(b, apiCode(describe(otherClient)))
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("same seed, different faults (-first +second):\n%s", diff)
	}
	if n := e.proxy.Forwarded(ec2proxy.AnyAction); n == 0 || n == 20 {
		t.Errorf("%d of 20 requests forwarded at probability 0.5", n)
	}
}

func TestLatencyDelaysThenForwards(t *testing.T) {
	e := newEnv(t)
	const delay = 300 * time.Millisecond
	e.proxy.Inject("DescribeInstances", ec2proxy.Latency(delay))
	start := time.Now()
	if err := describe(e.client); err != nil {
		t.Fatalf("describe instances: %v", err)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("took %s, want at least %s", took, delay)
	}
	if got := e.proxy.Forwarded("DescribeInstances"); got != 1 {
		t.Errorf("Forwarded = %d, want 1", got)
	}
}

func TestDropRequestLaunchesNothing(t *testing.T) {
	e := newEnv(t)
	e.proxy.Inject("RunInstances", ec2proxy.DropRequest)
	_, err := e.client.RunInstances(context.Background(), e.runInput("drop-request"))
	if err == nil || apiCode(err) != "" {
		t.Fatalf("run instances through a dropped request: %v, want a connection error", err)
	}
	if got := e.instances(t); len(got) != 0 {
		t.Errorf("moto has %d instances, want 0", len(got))
	}
	if got := e.proxy.Forwarded("RunInstances"); got != 0 {
		t.Errorf("Forwarded = %d, want 0", got)
	}
}

func TestRetryAfterDroppedResponseGetsTheSameInstance(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.proxy.Inject("RunInstances", ec2proxy.DropResponse)
	_, err := e.client.RunInstances(ctx, e.runInput("token-1"))
	if err == nil || apiCode(err) != "" {
		t.Fatalf("run instances through a dropped response: %v, want a connection error", err)
	}
	first := e.withToken(t, "token-1")
	if len(first) != 1 {
		t.Fatalf("after the dropped response moto has %v for the token, want one instance", first)
	}

	out, err := e.client.RunInstances(ctx, e.runInput("token-1"))
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := launchedID(t, out); got != first[0] {
		t.Errorf("retry returned %s, want the first launch's %s", got, first[0])
	}
	if got := e.withToken(t, "token-1"); len(got) != 1 {
		t.Errorf("after the retry moto has %v for the token, want one instance", got)
	}
	if c, f := e.proxy.Count("RunInstances"), e.proxy.Forwarded("RunInstances"); c != 2 || f != 1 {
		t.Errorf("Count, Forwarded = %d, %d; want 2, 1", c, f)
	}
}

// The SDK fills in a ClientToken by itself and keeps it across its own
// retries, so with the proxy a lost answer costs no second instance.
func TestSDKRetriesAfterDroppedResponseLaunchOnce(t *testing.T) {
	e := newEnv(t)
	e.proxy.Inject("RunInstances", ec2proxy.DropResponse, ec2proxy.DropResponse)
	client := newClient(e.proxy.URL(), "us-east-1", 3)
	noBackoff := func(o *ec2.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.MaxAttempts = 3
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	}
	out, err := client.RunInstances(context.Background(), e.runInput(""), noBackoff)
	if err != nil {
		t.Fatalf("run instances with SDK retries: %v", err)
	}
	id := launchedID(t, out)
	all := e.instances(t)
	if len(all) != 1 || aws.ToString(all[0].InstanceId) != id {
		t.Errorf("moto has %d instances, want only %s", len(all), id)
	}
	if c, f := e.proxy.Count("RunInstances"), e.proxy.Forwarded("RunInstances"); c != 3 || f != 1 {
		t.Errorf("Count, Forwarded = %d, %d; want 3, 1", c, f)
	}
}

func TestConcurrentLaunchesWithOneTokenMakeOneInstance(t *testing.T) {
	e := newEnv(t)
	const n = 8
	ids := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			out, err := e.client.RunInstances(context.Background(), e.runInput("shared"))
			if errs[i] = err; err == nil && len(out.Instances) == 1 {
				ids[i] = aws.ToString(out.Instances[0].InstanceId)
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("launch %d: %v", i, errs[i])
		}
		if ids[i] != ids[0] {
			t.Errorf("launch %d got %s, launch 0 got %s", i, ids[i], ids[0])
		}
	}
	if got := e.withToken(t, "shared"); len(got) != 1 {
		t.Errorf("moto has %v for the token, want one instance", got)
	}
}

func TestTokenReusedWithOtherParametersIsRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.client.RunInstances(ctx, e.runInput("token-2")); err != nil {
		t.Fatalf("run instances: %v", err)
	}
	other := e.runInput("token-2")
	other.InstanceType = types.InstanceTypeT3Small
	_, err := e.client.RunInstances(ctx, other)
	if got := apiCode(err); got != "IdempotentParameterMismatch" {
		t.Errorf("reuse with another instance type: %q (%v), want IdempotentParameterMismatch", got, err)
	}
	if got := e.withToken(t, "token-2"); len(got) != 1 {
		t.Errorf("moto has %v for the token, want one instance", got)
	}
}

func TestTokenOfTerminatedInstanceIsRefused(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	out, err := e.client.RunInstances(ctx, e.runInput("token-3"))
	if err != nil {
		t.Fatalf("run instances: %v", err)
	}
	if _, err := e.direct.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{launchedID(t, out)}}); err != nil {
		t.Fatalf("terminate: %v", err)
	}
	_, err = e.client.RunInstances(ctx, e.runInput("token-3"))
	if got := apiCode(err); got != "IdempotentInstanceTerminated" {
		t.Errorf("reuse after terminate: %q (%v), want IdempotentInstanceTerminated", got, err)
	}
	if got := e.proxy.Forwarded("RunInstances"); got != 1 {
		t.Errorf("Forwarded = %d, want 1", got)
	}
}

func TestFailedLaunchDoesNotKeepItsToken(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	e.proxy.Inject("RunInstances", ec2proxy.Throttle)
	if _, err := e.client.RunInstances(ctx, e.runInput("token-4")); apiCode(err) != "RequestLimitExceeded" {
		t.Fatalf("throttled launch: %v", err)
	}
	other := e.runInput("token-4")
	other.InstanceType = types.InstanceTypeT3Small
	if _, err := e.client.RunInstances(ctx, other); err != nil {
		t.Fatalf("launch after a throttled one, other parameters: %v", err)
	}
	if got := e.withToken(t, "token-4"); len(got) != 1 {
		t.Errorf("moto has %v for the token, want one instance", got)
	}
}

func TestTokensAreScopedToARegion(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	east, err := e.client.RunInstances(ctx, e.runInput("token-5"))
	if err != nil {
		t.Fatalf("run instances in us-east-1: %v", err)
	}
	west := newClient(e.proxy.URL(), "us-west-2", 1)
	in := e.runInput("token-5")
	in.ImageId = aws.String(amazonImage(t, newClient(e.proxy.Target(), "us-west-2", 1)))
	out, err := west.RunInstances(ctx, in)
	if err != nil {
		t.Fatalf("run instances in us-west-2: %v", err)
	}
	if launchedID(t, east) == launchedID(t, out) {
		t.Errorf("both regions got %s", launchedID(t, out))
	}
	if got := e.proxy.Forwarded("RunInstances"); got != 2 {
		t.Errorf("Forwarded = %d, want 2", got)
	}
}

func TestSeenFindsValuesInsideUserData(t *testing.T) {
	e := newEnv(t)
	in := e.runInput("")
	in.UserData = aws.String(base64.StdEncoding.EncodeToString([]byte("#!/bin/sh\nexport DB_PASSWORD=hunter2-secret\n")))
	in.TagSpecifications = []types.TagSpecification{{
		ResourceType: types.ResourceTypeInstance,
		Tags:         []types.Tag{{Key: aws.String("anycloud:deployment"), Value: aws.String("web & api")}},
	}}
	if _, err := e.client.RunInstances(context.Background(), in); err != nil {
		t.Fatalf("run instances: %v", err)
	}
	for s, want := range map[string]bool{
		"hunter2-secret": true, // base64 in UserData
		"web & api":      true, // URL-encoded
		"RunInstances":   true, // raw
		"not-sent":       false,
	} {
		if got := e.proxy.Seen(s); got != want {
			t.Errorf("Seen(%q) = %v, want %v", s, got, want)
		}
	}
	e.proxy.KeepBodies(false)
	if err := describe(e.client); err != nil {
		t.Fatal(err)
	}
	if got := len(e.proxy.Bodies()); got != 1 {
		t.Errorf("%d bodies kept, want 1 (the second came after KeepBodies(false))", got)
	}
}

func TestCloseStopsServing(t *testing.T) {
	e := newEnv(t)
	if err := e.proxy.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := describe(e.client); err == nil {
		t.Error("describe instances through a closed proxy succeeded")
	}
}

func TestNewRefusesATargetThatIsNotAnHTTPURL(t *testing.T) {
	for _, target := range []string{"", "127.0.0.1:5000", "ftp://127.0.0.1", "http://"} {
		if p, err := ec2proxy.New(target); err == nil {
			p.Close()
			t.Errorf("New(%q) succeeded", target)
		}
	}
}
