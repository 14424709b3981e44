package manifests

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestBucketValidation(t *testing.T) {
	tests := []struct {
		name    string
		buckets []Bucket
		aws     *DeploymentAWS
		want    ErrorList
	}{
		{name: "read-only and read-write", buckets: []Bucket{
			{URI: "s3://data/imagenet", Path: "/data"},
			{URI: "s3://out", Path: "/out", Mode: BucketReadWrite, SyncInterval: "1m"},
			{URI: "s3://theirs/x/y", Path: "/theirs", Mode: BucketReadOnly, Credentials: "partner"},
		}},
		{name: "an instance profile of the user's own", buckets: []Bucket{{URI: "s3://data", Path: "/data"}},
			aws: &DeploymentAWS{IAMRole: "arn:aws:iam::123456789012:instance-profile/train"}},
		{name: "managed with policies", buckets: []Bucket{{URI: "s3://data", Path: "/data"}},
			aws: &DeploymentAWS{PolicyARNs: []string{"arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"}}},
		{name: "bad URI", buckets: []Bucket{{URI: "gs://data/x", Path: "/data"}}, want: ErrorList{
			{Field: "spec.buckets[0].uri", Msg: `want s3://BUCKET or s3://BUCKET/PREFIX, got "gs://data/x"`},
		}},
		{name: "bad bucket name", buckets: []Bucket{{URI: "s3://Data_Set/x", Path: "/data"}}, want: ErrorList{
			{Field: "spec.buckets[0].uri", Msg: `"Data_Set" is not a bucket name (3 to 63 lower-case letters, digits, '.' and '-')`},
		}},
		{name: "wildcard prefix", buckets: []Bucket{{URI: "s3://data/x*", Path: "/data"}}, want: ErrorList{
			{Field: "spec.buckets[0].uri", Msg: `the prefix "x*" cannot hold wildcards, '\', '//' or control characters`},
		}},
		{name: "missing", buckets: []Bucket{{}}, want: ErrorList{
			{Field: "spec.buckets[0].uri", Msg: "required (s3://BUCKET/PREFIX)"},
			{Field: "spec.buckets[0].path", Msg: "required (an absolute directory in the container)"},
		}},
		{name: "relative path", buckets: []Bucket{{URI: "s3://data", Path: "data"}}, want: ErrorList{
			{Field: "spec.buckets[0].path", Msg: `want an absolute path, got "data"`},
		}},
		{name: "duplicate paths", buckets: []Bucket{{URI: "s3://data/a", Path: "/data"}, {URI: "s3://data/b", Path: "/data"}}, want: ErrorList{
			{Field: "spec.buckets[1].path", Msg: "/data is also the path of spec.buckets[0]"},
		}},
		{name: "bad mode", buckets: []Bucket{{URI: "s3://data", Path: "/data", Mode: "rw"}}, want: ErrorList{
			{Field: "spec.buckets[0].mode", Msg: `unknown mode "rw" (readOnly or readWrite)`},
		}},
		{name: "short interval", buckets: []Bucket{{URI: "s3://data", Path: "/data", Mode: BucketReadWrite, SyncInterval: "1s"}}, want: ErrorList{
			{Field: "spec.buckets[0].syncInterval", Msg: `"1s" is not a duration of at least 10s (such as 5m)`},
		}},
		{name: "bad credentials name", buckets: []Bucket{{URI: "s3://data", Path: "/data", Credentials: "Partner"}}, want: ErrorList{
			{Field: "spec.buckets[0].credentials", Msg: `"Partner" must be lower-case letters, digits and '-', starting and ending with a letter or digit`},
		}},
		{name: "local credentials", buckets: []Bucket{{URI: "s3://data", Path: "/data", Credentials: "local"}}, want: ErrorList{
			{Field: "spec.buckets[0].credentials", Msg: `"local" is the local Docker provider, which has no buckets: name aws credentials of the bucket's account`},
		}},
		{name: "no role for this account's bucket", buckets: []Bucket{{URI: "s3://data", Path: "/data"}}, aws: &DeploymentAWS{IAMRole: IAMRoleNone}, want: ErrorList{
			{Field: "spec.aws.iamRole", Msg: "none cannot read the buckets of this account: leave it out (managed) or name an instance profile"},
		}},
		{name: "another account's bucket needs no role", buckets: []Bucket{{URI: "s3://data", Path: "/data", Credentials: "partner"}}, aws: &DeploymentAWS{IAMRole: IAMRoleNone}},
		{name: "bad role", aws: &DeploymentAWS{IAMRole: "arn:aws:iam::123456789012:role/train"}, want: ErrorList{
			{Field: "spec.aws.iamRole", Msg: `"arn:aws:iam::123456789012:role/train" is not managed, none or an instance profile ARN (arn:aws:iam::ACCOUNT:instance-profile/NAME)`},
		}},
		{name: "policies without a managed role", aws: &DeploymentAWS{PolicyARNs: []string{"arn:aws:iam::123456789012:policy/x"}}, want: ErrorList{
			{Field: "spec.aws.policyArns", Msg: "attach to the managed role only: set iamRole: managed"},
		}},
		{name: "bad policy", buckets: []Bucket{{URI: "s3://data", Path: "/data"}}, aws: &DeploymentAWS{PolicyARNs: []string{"ReadOnlyAccess"}}, want: ErrorList{
			{Field: "spec.aws.policyArns[0]", Msg: `"ReadOnlyAccess" is not a policy ARN (arn:aws:iam::ACCOUNT:policy/NAME)`},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := validDeployment()
			d.Spec.Buckets, d.Spec.AWS = tt.buckets, tt.aws
			if diff := cmp.Diff(tt.want, Validate(d)); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestIAMRoleDefaultsToManagedWithBucketsOnly(t *testing.T) {
	d := validDeployment()
	if got := d.Spec.IAMRole(); got != IAMRoleNone {
		t.Errorf("without buckets: %q", got)
	}
	d.Spec.Buckets = []Bucket{{URI: "s3://data", Path: "/data"}}
	if got := d.Spec.IAMRole(); got != IAMRoleManaged {
		t.Errorf("with buckets: %q", got)
	}
	before := string(d.SpecJSON())
	Default(d)
	if string(d.SpecJSON()) != before {
		t.Errorf("Default wrote the role into the spec (a stored deployment's generation would move): %s", d.SpecJSON())
	}
}

func TestBucketCredentialsAreReferencedOnce(t *testing.T) {
	d := validDeployment()
	d.Spec.Credentials = "mine"
	d.Spec.Secrets = []string{"hf"}
	d.Spec.Buckets = []Bucket{
		{URI: "s3://a", Path: "/a", Credentials: "partner"},
		{URI: "s3://b", Path: "/b", Credentials: "partner"},
		{URI: "s3://c", Path: "/c", Credentials: "mine"},
		{URI: "s3://d", Path: "/d"},
	}
	want := []ObjectRef{{Kind: KindCredentials, Name: "mine"}, {Kind: KindSecretBundle, Name: "hf"}, {Kind: KindCredentials, Name: "partner"}}
	if diff := cmp.Diff(want, d.References()); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestBucketsDecodeStrictlyWithLines(t *testing.T) {
	in := `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  image: ghcr.io/me/train:latest
  buckets:
  - uri: s3://data/imagenet
    path: /data
    mode: readonly
    region: us-east-1
  aws: {iamRole: managed, policyArn: x}
`
	_, err := Decode("train.yaml", strings.NewReader(in))
	l := fieldErrors(t, err)
	want := []where{{"train.yaml", 1, 10, "spec.buckets[0].region"}, {"train.yaml", 1, 11, "spec.aws.policyArn"}}
	if diff := cmp.Diff(want, locations(l)); diff != "" {
		t.Errorf("(-want +got):\n%s\n%v", diff, l)
	}
	in = strings.Replace(strings.Replace(in, "    region: us-east-1\n", "", 1), ", policyArn: x", "", 1)
	docs, err := Decode("train.yaml", strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want = []where{{"train.yaml", 1, 9, "spec.buckets[0].mode"}}
	if diff := cmp.Diff(want, locations(Check(docs))); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}
