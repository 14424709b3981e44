package aws_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/google/go-cmp/cmp"

	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
)

// bucketReq is a launch of a deployment with buckets of this account
// (one read-only, one read-write) and one of another account's.
func bucketReq(name string, attempt int) provider.LaunchRequest {
	req := launchReq(name, attempt, false)
	req.VMType = "t3.micro"
	req.IAMRole = manifests.IAMRoleManaged
	req.Buckets = []provider.Bucket{
		{URI: "s3://data/imagenet", Bucket: "data", Prefix: "imagenet", Path: "/data"},
		{URI: "s3://out/run1", Bucket: "out", Prefix: "run1", Path: "/out", ReadWrite: true},
		{URI: "s3://theirs/shared", Bucket: "theirs", Prefix: "shared", Path: "/theirs", OtherAccount: true},
	}
	return req
}

// awsJSON runs the AWS CLI against moto directly (an outside observer)
// and decodes its JSON answer into v.
func awsJSON(t *testing.T, moto string, v any, args ...string) {
	t.Helper()
	out := testenv.AWSCLI(t, moto, append(args, "--output", "json")...)
	if err := json.Unmarshal([]byte(out), v); err != nil {
		t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

type cliTags struct {
	Tags []struct{ Key, Value string }
}

func (c cliTags) m() map[string]string {
	out := map[string]string{}
	for _, tg := range c.Tags {
		out[tg.Key] = tg.Value
	}
	return out
}

// iamNames lists the role and instance profile names under anycloud's
// path, asked of moto directly (an outside observer; the SDK, which is
// quicker than the AWS CLI where a test asks often).
func iamNames(t *testing.T, moto string) (roles, profiles []string) {
	t.Helper()
	ctx := context.Background()
	c, err := awsprovider.NewClients(ctx, awsprovider.ClientConfig{Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: moto})
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.IAM.ListRoles(ctx, &iam.ListRolesInput{PathPrefix: sdkaws.String("/anycloud/")})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range r.Roles {
		roles = append(roles, sdkaws.ToString(x.RoleName))
	}
	p, err := c.IAM.ListInstanceProfiles(ctx, &iam.ListInstanceProfilesInput{PathPrefix: sdkaws.String("/anycloud/")})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range p.InstanceProfiles {
		profiles = append(profiles, sdkaws.ToString(x.InstanceProfileName))
	}
	return roles, profiles
}

func TestManagedRoleIsMadeBeforeTheLaunchAndReleasedAfterIt(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	var policy struct{ Policy struct{ Arn string } }
	awsJSON(t, r.moto, &policy, "iam", "create-policy", "--policy-name", "extra", "--policy-document",
		`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"cloudwatch:PutMetricData","Resource":"*"}]}`)
	req := bucketReq("train", 1)
	req.PolicyARNs = []string{policy.Policy.Arn}
	r.proxy.KeepBodies(true)
	vm, err := r.prov.Launch(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	name := awsprovider.RoleName(req.UID)
	if vm.Role != name || !strings.HasSuffix(vm.InstanceProfile, ":instance-profile/anycloud/c0ffee/"+name) {
		t.Errorf("launched VM says role %q, profile %q", vm.Role, vm.InstanceProfile)
	}

	wantTags := map[string]string{"anycloud:managed": "true", "anycloud:cluster": "c0ffee", "anycloud:uid": req.UID, "anycloud:deployment": "train"}
	var rt cliTags
	awsJSON(t, r.moto, &rt, "iam", "list-role-tags", "--role-name", name)
	// (moto's list-instance-profile-tags fails; get-instance-profile
	// carries the tags too.)
	var pt struct{ InstanceProfile cliTags }
	if diff := cmp.Diff(wantTags, rt.m()); diff != "" {
		t.Errorf("role tags (-want +got):\n%s", diff)
	}
	awsJSON(t, r.moto, &pt, "iam", "get-instance-profile", "--instance-profile-name", name)
	if diff := cmp.Diff(wantTags, pt.InstanceProfile.m()); diff != "" {
		t.Errorf("instance profile tags (-want +got):\n%s", diff)
	}
	var role struct {
		Role struct{ AssumeRolePolicyDocument any }
	}
	awsJSON(t, r.moto, &role, "iam", "get-role", "--role-name", name)
	if trust, _ := json.Marshal(role.Role.AssumeRolePolicyDocument); !strings.Contains(string(trust), `"Service":"ec2.amazonaws.com"`) {
		t.Errorf("trust policy %s", trust)
	}
	var prof struct {
		InstanceProfile struct{ Roles []struct{ RoleName string } }
	}
	awsJSON(t, r.moto, &prof, "iam", "get-instance-profile", "--instance-profile-name", name)
	if len(prof.InstanceProfile.Roles) != 1 || prof.InstanceProfile.Roles[0].RoleName != name {
		t.Errorf("instance profile holds %+v", prof.InstanceProfile.Roles)
	}
	var attached struct{ AttachedPolicies []struct{ PolicyArn string } }
	awsJSON(t, r.moto, &attached, "iam", "list-attached-role-policies", "--role-name", name)
	if len(attached.AttachedPolicies) != 1 || attached.AttachedPolicies[0].PolicyArn != policy.Policy.Arn {
		t.Errorf("attached policies %+v", attached.AttachedPolicies)
	}

	// The inline policy allows exactly this account's buckets and
	// prefixes: not the other account's, nothing else.
	var inline struct{ PolicyDocument any }
	awsJSON(t, r.moto, &inline, "iam", "get-role-policy", "--role-name", name, "--policy-name", awsprovider.BucketPolicyName)
	doc, _ := json.Marshal(inline.PolicyDocument)
	var got struct {
		Statement []struct {
			Effect    string
			Action    []string
			Resource  []string
			Condition map[string]map[string][]string
		}
	}
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatalf("policy %s: %v", doc, err)
	}
	resources := map[string][]string{}
	for _, st := range got.Statement {
		if st.Effect != "Allow" {
			t.Errorf("statement %+v", st)
		}
		for _, a := range st.Action {
			resources[a] = append(resources[a], st.Resource...)
			if a == "s3:ListBucket" {
				if p := st.Condition["StringLike"]["s3:prefix"]; len(p) == 0 {
					t.Errorf("ListBucket without a prefix condition: %+v", st)
				}
			}
		}
	}
	want := map[string][]string{
		"s3:ListBucket":   {"arn:aws:s3:::data", "arn:aws:s3:::out"},
		"s3:GetObject":    {"arn:aws:s3:::data/imagenet/*", "arn:aws:s3:::out/run1/*"},
		"s3:PutObject":    {"arn:aws:s3:::out/run1/*"},
		"s3:DeleteObject": {"arn:aws:s3:::out/run1/*"},
	}
	if diff := cmp.Diff(want, resources); diff != "" {
		t.Errorf("policy %s (-want +got):\n%s", doc, diff)
	}
	if strings.Contains(string(doc), "theirs") {
		t.Errorf("the policy names the other account's bucket: %s", doc)
	}

	// RunInstances carried the profile, and EC2 shows it.
	if !r.proxy.Seen("IamInstanceProfile.Arn=" + strings.ReplaceAll(strings.ReplaceAll(vm.InstanceProfile, ":", "%3A"), "/", "%2F")) {
		t.Error("RunInstances did not carry the instance profile")
	}
	insts := r.instances(t)
	if len(insts) != 1 || insts[0].IamInstanceProfile == nil || sdkaws.ToString(insts[0].IamInstanceProfile.Arn) != vm.InstanceProfile {
		t.Errorf("instances %+v", insts)
	}
	// A role under the path that is not tagged as this cluster's is
	// never the sweep's.
	testenv.AWSCLI(t, r.moto, "iam", "create-role", "--role-name", "anycloud-not-ours", "--path", "/anycloud/c0ffee/",
		"--assume-role-policy-document", `{"Version":"2012-10-17","Statement":[]}`, "--tags", "Key=anycloud:managed,Value=true")
	kept, err := r.prov.Kept(ctx)
	if err != nil || !slices.Equal(kept, []string{req.UID}) {
		t.Errorf("Kept = %v, %v", kept, err)
	}

	// Released after the instance: all three are gone, and a second
	// release is no error.
	if err := r.prov.Terminate(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := r.prov.Release(ctx, req.UID); err != nil {
			t.Fatal(err)
		}
	}
	roles, profiles := iamNames(t, r.moto)
	if !slices.Equal(roles, []string{"anycloud-not-ours"}) || len(profiles) != 0 {
		t.Errorf("after release: roles %v, profiles %v", roles, profiles)
	}
	var pols struct{ Policies []struct{ PolicyName string } }
	awsJSON(t, r.moto, &pols, "iam", "list-policies", "--scope", "Local")
	if len(pols.Policies) != 1 {
		t.Errorf("the user's own policy went with the role: %+v", pols.Policies)
	}
}

func TestBucketChangeUpdatesThePolicyInPlace(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	req := bucketReq("train", 1)
	if _, err := r.prov.Launch(ctx, req); err != nil {
		t.Fatal(err)
	}
	req = bucketReq("train", 2)
	req.Buckets = []provider.Bucket{{URI: "s3://other/x", Bucket: "other", Prefix: "x", Path: "/x"}}
	if _, err := r.prov.Launch(ctx, req); err != nil {
		t.Fatal(err)
	}
	if n := r.proxy.Count("CreateRole"); n != 1 {
		t.Errorf("CreateRole %d times, want 1", n)
	}
	if n := r.proxy.Count("PutRolePolicy"); n != 2 {
		t.Errorf("PutRolePolicy %d times, want 2", n)
	}
	var inline struct{ PolicyDocument any }
	awsJSON(t, r.moto, &inline, "iam", "get-role-policy", "--role-name", awsprovider.RoleName(req.UID), "--policy-name", awsprovider.BucketPolicyName)
	doc, _ := json.Marshal(inline.PolicyDocument)
	if !strings.Contains(string(doc), "arn:aws:s3:::other/x/*") || strings.Contains(string(doc), "imagenet") {
		t.Errorf("policy after the change: %s", doc)
	}
}

// A fresh instance profile is briefly unknown to EC2 (IAM is eventually
// consistent): the launch repeats with the same ClientToken and makes one
// instance.
func TestFreshInstanceProfileRefusedByEC2IsRetriedWithTheSameToken(t *testing.T) {
	r := newRig(t)
	invalid := ec2proxy.ErrorMessage("InvalidParameterValue", "Value (anycloud-x) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name")
	r.proxy.Inject("RunInstances", invalid, invalid, ec2proxy.DropResponse)
	r.proxy.KeepBodies(true)
	vm, err := r.prov.Launch(context.Background(), bucketReq("train", 1))
	if err != nil {
		t.Fatal(err)
	}
	if n := r.proxy.Count("RunInstances"); n != 4 {
		t.Errorf("RunInstances %d times, want 4 (two refusals, a dropped answer, the launch)", n)
	}
	tokens := map[string]bool{}
	for _, b := range r.proxy.Bodies() {
		if s := string(b); strings.Contains(s, "Action=RunInstances") {
			for _, kv := range strings.Split(s, "&") {
				if strings.HasPrefix(kv, "ClientToken=") {
					tokens[kv] = true
				}
			}
		}
	}
	if len(tokens) != 1 {
		t.Errorf("ClientTokens %v, want one", tokens)
	}
	if insts := r.instances(t); len(insts) != 1 || sdkaws.ToString(insts[0].InstanceId) != vm.ID {
		t.Errorf("instances %d, want just %s", len(insts), vm.ID)
	}
}

// A control plane that dies between making the role and launching leaves
// a role that the next one reuses: one role, one profile, one instance.
func TestCrashBetweenRoleAndLaunchLeavesNoDuplicate(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	r.proxy.FailWhere("RunInstances", "InstanceType", "t3.micro", ec2proxy.ErrorCode("InternalError"))
	if _, err := r.prov.Launch(ctx, bucketReq("train", 1)); !errors.Is(err, provider.ErrUnavailable) {
		t.Fatalf("launch through a failing RunInstances: %v", err)
	}
	if roles, profiles := iamNames(t, r.moto); len(roles) != 1 || len(profiles) != 1 || len(r.instances(t)) != 0 {
		t.Fatalf("after the failed launch: roles %v, profiles %v, %d instances", roles, profiles, len(r.instances(t)))
	}
	r.proxy.ClearFaults()
	// A new provider, as a restarted control plane makes.
	restarted := newRigOn(t, r.proxy, r.moto, awsprovider.SSH{Home: r.home})
	for range 2 { // the relaunch, and a retry of it, with the same token
		if _, err := restarted.prov.Launch(ctx, bucketReq("train", 1)); err != nil {
			t.Fatal(err)
		}
	}
	roles, profiles := iamNames(t, r.moto)
	if len(roles) != 1 || len(profiles) != 1 || len(r.instances(t)) != 1 {
		t.Errorf("after the restart: roles %v, profiles %v, %d instances", roles, profiles, len(r.instances(t)))
	}
}

func TestFederationTokenIsScopedToTheBucketFor36Hours(t *testing.T) {
	r := newRig(t)
	r.proxy.KeepBodies(true)
	b := provider.Bucket{URI: "s3://theirs/shared", Bucket: "theirs", Prefix: "shared", Path: "/theirs"}
	start := time.Now()
	c, err := r.prov.Federate(context.Background(), "train", b)
	if err != nil {
		t.Fatal(err)
	}
	if c.AccessKeyID == "" || c.SecretAccessKey == "" || c.SessionToken == "" {
		t.Error("incomplete credentials")
	}
	if d := c.Expires.Sub(start); d < 35*time.Hour || d > 37*time.Hour {
		t.Errorf("expire in %s, want 36h", d)
	}
	if !r.proxy.Seen("DurationSeconds=129600") || !r.proxy.Seen("arn%3Aaws%3As3%3A%3A%3Atheirs%2Fshared%2F%2A") {
		t.Errorf("GetFederationToken did not ask for 36h scoped to the bucket: %s", r.proxy.Bodies())
	}
	if s := c.String() + " " + c.GoString(); strings.Contains(s, c.SecretAccessKey) || strings.Contains(s, c.AccessKeyID) {
		t.Errorf("the credentials print their keys: %s", s)
	}
}
