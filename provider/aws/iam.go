package aws

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	iamtypes "github.com/aws/aws-sdk-go-v2/service/iam/types"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider"
)

// IAMAPI is what the provider uses of the IAM client: each deployment
// with buckets gets a role and an instance profile of its own.
type IAMAPI interface {
	GetRole(ctx context.Context, params *iam.GetRoleInput, optFns ...func(*iam.Options)) (*iam.GetRoleOutput, error)
	CreateRole(ctx context.Context, params *iam.CreateRoleInput, optFns ...func(*iam.Options)) (*iam.CreateRoleOutput, error)
	DeleteRole(ctx context.Context, params *iam.DeleteRoleInput, optFns ...func(*iam.Options)) (*iam.DeleteRoleOutput, error)
	ListRoles(ctx context.Context, params *iam.ListRolesInput, optFns ...func(*iam.Options)) (*iam.ListRolesOutput, error)
	PutRolePolicy(ctx context.Context, params *iam.PutRolePolicyInput, optFns ...func(*iam.Options)) (*iam.PutRolePolicyOutput, error)
	DeleteRolePolicy(ctx context.Context, params *iam.DeleteRolePolicyInput, optFns ...func(*iam.Options)) (*iam.DeleteRolePolicyOutput, error)
	ListRolePolicies(ctx context.Context, params *iam.ListRolePoliciesInput, optFns ...func(*iam.Options)) (*iam.ListRolePoliciesOutput, error)
	AttachRolePolicy(ctx context.Context, params *iam.AttachRolePolicyInput, optFns ...func(*iam.Options)) (*iam.AttachRolePolicyOutput, error)
	DetachRolePolicy(ctx context.Context, params *iam.DetachRolePolicyInput, optFns ...func(*iam.Options)) (*iam.DetachRolePolicyOutput, error)
	ListAttachedRolePolicies(ctx context.Context, params *iam.ListAttachedRolePoliciesInput, optFns ...func(*iam.Options)) (*iam.ListAttachedRolePoliciesOutput, error)
	GetInstanceProfile(ctx context.Context, params *iam.GetInstanceProfileInput, optFns ...func(*iam.Options)) (*iam.GetInstanceProfileOutput, error)
	CreateInstanceProfile(ctx context.Context, params *iam.CreateInstanceProfileInput, optFns ...func(*iam.Options)) (*iam.CreateInstanceProfileOutput, error)
	DeleteInstanceProfile(ctx context.Context, params *iam.DeleteInstanceProfileInput, optFns ...func(*iam.Options)) (*iam.DeleteInstanceProfileOutput, error)
	AddRoleToInstanceProfile(ctx context.Context, params *iam.AddRoleToInstanceProfileInput, optFns ...func(*iam.Options)) (*iam.AddRoleToInstanceProfileOutput, error)
	RemoveRoleFromInstanceProfile(ctx context.Context, params *iam.RemoveRoleFromInstanceProfileInput, optFns ...func(*iam.Options)) (*iam.RemoveRoleFromInstanceProfileOutput, error)
}

// BucketPolicyName is the name of the managed role's inline policy.
const BucketPolicyName = "anycloud-buckets"

// ec2Trust lets EC2 instances assume the role (through their profile).
const ec2Trust = `{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ec2.amazonaws.com"},"Action":"sts:AssumeRole"}]}`

// RoleName is the managed role (and instance profile) of a deployment:
// IAM names are unique per account, and uids are unique over time.
func RoleName(uid string) string { return "anycloud-" + uid }

// rolePath holds every role and profile of this control plane, so that
// the sweep lists exactly those.
func (p *Provider) rolePath() string { return "/anycloud/" + p.cluster + "/" }

func (p *Provider) iamTags(req provider.LaunchRequest) []iamtypes.Tag {
	return []iamtypes.Tag{
		{Key: sdkaws.String(TagManaged), Value: sdkaws.String("true")},
		{Key: sdkaws.String(TagCluster), Value: sdkaws.String(p.cluster)},
		{Key: sdkaws.String(TagUID), Value: sdkaws.String(req.UID)},
		{Key: sdkaws.String(TagDeployment), Value: sdkaws.String(req.Deployment)},
	}
}

// policyDocument is an IAM policy document.
type policyDocument struct {
	Version   string      `json:"Version"`
	Statement []statement `json:"Statement"`
}

type statement struct {
	Effect    string                         `json:"Effect"`
	Action    []string                       `json:"Action"`
	Resource  []string                       `json:"Resource"`
	Condition map[string]map[string][]string `json:"Condition,omitempty"`
}

// BucketPolicy is the least-privilege policy for buckets: per bucket,
// s3:ListBucket limited to its prefix, s3:GetObject on the prefix's
// objects, and s3:PutObject and s3:DeleteObject for read-write ones. It
// names nothing else. ok is false when there is nothing to allow.
//
// A prefix is a folder: s3://data/imagenet allows data/imagenet/… and not
// data/imagenet2/…, which a bare "imagenet*" would. The VM's sync lists
// and copies the folder (rclone lists "imagenet/"), never the sibling
// keys.
func BucketPolicy(buckets []provider.Bucket) (doc string, ok bool) {
	var sts []statement
	var read, write []string
	for _, b := range buckets {
		list := statement{Effect: "Allow", Action: []string{"s3:ListBucket"}, Resource: []string{"arn:aws:s3:::" + b.Bucket}}
		folder := ""
		if p := strings.Trim(b.Prefix, "/"); p != "" {
			folder = p + "/"
			list.Condition = map[string]map[string][]string{"StringLike": {"s3:prefix": {folder, folder + "*"}}}
		}
		sts = append(sts, list)
		obj := "arn:aws:s3:::" + b.Bucket + "/" + folder + "*"
		if !slices.Contains(read, obj) {
			read = append(read, obj)
		}
		if b.ReadWrite && !slices.Contains(write, obj) {
			write = append(write, obj)
		}
	}
	if len(sts) == 0 {
		return "", false
	}
	sts = append(sts, statement{Effect: "Allow", Action: []string{"s3:GetObject"}, Resource: read})
	if len(write) > 0 {
		sts = append(sts, statement{Effect: "Allow", Action: []string{"s3:PutObject", "s3:DeleteObject"}, Resource: write})
	}
	b, _ := json.Marshal(policyDocument{Version: "2012-10-17", Statement: sts})
	return string(b), true
}

// sameAccount are the buckets read with the deployment's own role.
func sameAccount(buckets []provider.Bucket) []provider.Bucket {
	var out []provider.Bucket
	for _, b := range buckets {
		if b.Session == nil && !b.OtherAccount {
			out = append(out, b)
		}
	}
	return out
}

// instanceProfile is what req's VMs are launched with: its managed
// profile (made or brought up to date first), the user's own, or none.
func (p *Provider) instanceProfile(ctx context.Context, req provider.LaunchRequest) (arn, role string, err error) {
	switch mode := req.IAMRole; mode {
	case "", manifests.IAMRoleNone:
		return "", "", nil
	case manifests.IAMRoleManaged:
		if p.iam == nil {
			return "", "", fmt.Errorf("a managed IAM role needs an IAM client: %w", provider.ErrInvalid)
		}
		arn, err := p.ensureRole(ctx, req)
		return arn, RoleName(req.UID), err
	default:
		return mode, "", nil
	}
}

// ensureRole makes req's role and instance profile, tagged, or brings
// them up to date: the inline bucket policy (PutRolePolicy replaces it in
// place) and the attached policies. Every step is idempotent, so a
// control plane that died half-way finishes the job at the next launch.
func (p *Provider) ensureRole(ctx context.Context, req provider.LaunchRequest) (string, error) {
	name := RoleName(req.UID)
	err := p.iamCall(ctx, "GetRole", func(ctx context.Context) error {
		_, err := p.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: &name})
		return err
	})
	if errors.Is(err, provider.ErrNotFound) {
		err = p.iamCall(ctx, "CreateRole", func(ctx context.Context) error {
			_, err := p.iam.CreateRole(ctx, &iam.CreateRoleInput{
				RoleName: &name, Path: sdkaws.String(p.rolePath()), AssumeRolePolicyDocument: sdkaws.String(ec2Trust),
				Description: sdkaws.String("anycloud deployment " + req.Deployment + " (" + req.UID + ")"),
				Tags:        p.iamTags(req),
			})
			return err
		})
		if apiCode(err) == "EntityAlreadyExists" {
			err = nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("IAM role %s: %w", name, err)
	}
	if doc, ok := BucketPolicy(sameAccount(req.Buckets)); ok {
		err = p.iamCall(ctx, "PutRolePolicy", func(ctx context.Context) error {
			_, err := p.iam.PutRolePolicy(ctx, &iam.PutRolePolicyInput{RoleName: &name, PolicyName: sdkaws.String(BucketPolicyName), PolicyDocument: &doc})
			return err
		})
	} else {
		err = p.iamCall(ctx, "DeleteRolePolicy", func(ctx context.Context) error {
			_, err := p.iam.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: &name, PolicyName: sdkaws.String(BucketPolicyName)})
			return err
		})
		if errors.Is(err, provider.ErrNotFound) {
			err = nil
		}
	}
	if err != nil {
		return "", fmt.Errorf("bucket policy of IAM role %s: %w", name, err)
	}
	if err := p.attachPolicies(ctx, name, req.PolicyARNs); err != nil {
		return "", err
	}
	var prof *iamtypes.InstanceProfile
	err = p.iamCall(ctx, "GetInstanceProfile", func(ctx context.Context) error {
		out, err := p.iam.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: &name})
		if err == nil {
			prof = out.InstanceProfile
		}
		return err
	})
	if errors.Is(err, provider.ErrNotFound) {
		err = p.iamCall(ctx, "CreateInstanceProfile", func(ctx context.Context) error {
			out, err := p.iam.CreateInstanceProfile(ctx, &iam.CreateInstanceProfileInput{
				InstanceProfileName: &name, Path: sdkaws.String(p.rolePath()), Tags: p.iamTags(req),
			})
			if err == nil {
				prof = out.InstanceProfile
			}
			return err
		})
	}
	if err != nil {
		return "", fmt.Errorf("instance profile %s: %w", name, err)
	}
	if !slices.ContainsFunc(prof.Roles, func(r iamtypes.Role) bool { return sdkaws.ToString(r.RoleName) == name }) {
		err = p.iamCall(ctx, "AddRoleToInstanceProfile", func(ctx context.Context) error {
			_, err := p.iam.AddRoleToInstanceProfile(ctx, &iam.AddRoleToInstanceProfileInput{InstanceProfileName: &name, RoleName: &name})
			return err
		})
		if err != nil && apiCode(err) != "LimitExceeded" { // LimitExceeded: the profile has its one role already
			return "", fmt.Errorf("add role %s to its instance profile: %w", name, err)
		}
	}
	return sdkaws.ToString(prof.Arn), nil
}

// attachPolicies makes the managed policies attached to role exactly
// arns.
func (p *Provider) attachPolicies(ctx context.Context, role string, arns []string) error {
	var attached []string
	err := p.iamCall(ctx, "ListAttachedRolePolicies", func(ctx context.Context) error {
		attached = nil
		pg := iam.NewListAttachedRolePoliciesPaginator(p.iam, &iam.ListAttachedRolePoliciesInput{RoleName: &role})
		for pg.HasMorePages() {
			out, err := pg.NextPage(ctx)
			if err != nil {
				return err
			}
			for _, a := range out.AttachedPolicies {
				attached = append(attached, sdkaws.ToString(a.PolicyArn))
			}
		}
		return nil
	})
	if errors.Is(err, provider.ErrNotFound) {
		return nil // the role is gone: nothing is attached
	}
	if err != nil {
		return fmt.Errorf("policies of IAM role %s: %w", role, err)
	}
	for _, arn := range arns {
		if slices.Contains(attached, arn) {
			continue
		}
		if err := p.iamCall(ctx, "AttachRolePolicy", func(ctx context.Context) error {
			_, err := p.iam.AttachRolePolicy(ctx, &iam.AttachRolePolicyInput{RoleName: &role, PolicyArn: sdkaws.String(arn)})
			return err
		}); err != nil {
			return fmt.Errorf("attach %s to IAM role %s: %w", arn, role, err)
		}
	}
	for _, arn := range attached {
		if slices.Contains(arns, arn) {
			continue
		}
		if err := p.iamCall(ctx, "DetachRolePolicy", func(ctx context.Context) error {
			_, err := p.iam.DetachRolePolicy(ctx, &iam.DetachRolePolicyInput{RoleName: &role, PolicyArn: sdkaws.String(arn)})
			return err
		}); err != nil && !errors.Is(err, provider.ErrNotFound) {
			return fmt.Errorf("detach %s from IAM role %s: %w", arn, role, err)
		}
	}
	return nil
}

// removeRole deletes uid's instance profile and role, with what is
// attached to them. What is already gone is success.
func (p *Provider) removeRole(ctx context.Context, uid string) error {
	if p.iam == nil {
		return nil
	}
	name := RoleName(uid)
	var prof *iamtypes.InstanceProfile
	err := p.iamCall(ctx, "GetInstanceProfile", func(ctx context.Context) error {
		out, err := p.iam.GetInstanceProfile(ctx, &iam.GetInstanceProfileInput{InstanceProfileName: &name})
		if err == nil {
			prof = out.InstanceProfile
		}
		return err
	})
	switch {
	case errors.Is(err, provider.ErrNotFound):
	case err != nil:
		return fmt.Errorf("instance profile %s: %w", name, err)
	default:
		for _, r := range prof.Roles {
			if err := p.iamCall(ctx, "RemoveRoleFromInstanceProfile", func(ctx context.Context) error {
				_, err := p.iam.RemoveRoleFromInstanceProfile(ctx, &iam.RemoveRoleFromInstanceProfileInput{InstanceProfileName: &name, RoleName: r.RoleName})
				return err
			}); err != nil && !errors.Is(err, provider.ErrNotFound) {
				return fmt.Errorf("remove role from instance profile %s: %w", name, err)
			}
		}
		if err := p.iamCall(ctx, "DeleteInstanceProfile", func(ctx context.Context) error {
			_, err := p.iam.DeleteInstanceProfile(ctx, &iam.DeleteInstanceProfileInput{InstanceProfileName: &name})
			return err
		}); err != nil && !errors.Is(err, provider.ErrNotFound) {
			return fmt.Errorf("delete instance profile %s: %w", name, err)
		}
	}
	var inline []string
	err = p.iamCall(ctx, "ListRolePolicies", func(ctx context.Context) error {
		out, err := p.iam.ListRolePolicies(ctx, &iam.ListRolePoliciesInput{RoleName: &name})
		if err == nil {
			inline = out.PolicyNames
		}
		return err
	})
	if errors.Is(err, provider.ErrNotFound) {
		return nil // no role
	}
	if err != nil {
		return fmt.Errorf("policies of IAM role %s: %w", name, err)
	}
	for _, pol := range inline {
		if err := p.iamCall(ctx, "DeleteRolePolicy", func(ctx context.Context) error {
			_, err := p.iam.DeleteRolePolicy(ctx, &iam.DeleteRolePolicyInput{RoleName: &name, PolicyName: sdkaws.String(pol)})
			return err
		}); err != nil && !errors.Is(err, provider.ErrNotFound) {
			return fmt.Errorf("delete policy %s of IAM role %s: %w", pol, name, err)
		}
	}
	if err := p.attachPolicies(ctx, name, nil); err != nil {
		return err
	}
	err = p.iamCall(ctx, "DeleteRole", func(ctx context.Context) error {
		_, err := p.iam.DeleteRole(ctx, &iam.DeleteRoleInput{RoleName: &name})
		return err
	})
	if err != nil && !errors.Is(err, provider.ErrNotFound) {
		return fmt.Errorf("delete IAM role %s: %w", name, err)
	}
	return nil
}

// Kept implements provider.Keeper: the uids whose managed roles this
// control plane has in the account: one listing of its role path, and
// each role's tags (which a listing does not carry) checked, so that only
// a role tagged anycloud:managed for this cluster, with its uid, is ever
// swept.
func (p *Provider) Kept(ctx context.Context) ([]string, error) {
	if p.iam == nil {
		return nil, nil
	}
	var names []string
	err := p.iamCall(ctx, "ListRoles", func(ctx context.Context) error {
		names = nil
		pg := iam.NewListRolesPaginator(p.iam, &iam.ListRolesInput{PathPrefix: sdkaws.String(p.rolePath())})
		for pg.HasMorePages() {
			out, err := pg.NextPage(ctx)
			if err != nil {
				return err
			}
			for _, r := range out.Roles {
				names = append(names, sdkaws.ToString(r.RoleName))
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var uids []string
	for _, name := range names {
		uid, ok := strings.CutPrefix(name, "anycloud-")
		if !ok {
			continue
		}
		var tags []iamtypes.Tag
		err := p.iamCall(ctx, "GetRole", func(ctx context.Context) error {
			out, err := p.iam.GetRole(ctx, &iam.GetRoleInput{RoleName: &name})
			if err == nil {
				tags = out.Role.Tags
			}
			return err
		})
		if errors.Is(err, provider.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("IAM role %s: %w", name, err)
		}
		tag := map[string]string{}
		for _, t := range tags {
			tag[sdkaws.ToString(t.Key)] = sdkaws.ToString(t.Value)
		}
		if tag[TagManaged] == "true" && tag[TagCluster] == p.cluster && tag[TagUID] == uid {
			uids = append(uids, uid)
		}
	}
	return uids, nil
}

// iamCall is call within the IAM bucket.
func (p *Provider) iamCall(ctx context.Context, op string, fn func(context.Context) error) error {
	return p.call(ctx, p.limits.iam, op, fn)
}

// invalidProfile reports EC2's refusal of an instance profile that IAM
// made moments ago and EC2 does not see yet (IAM is eventually
// consistent): the same launch succeeds a few seconds later.
func invalidProfile(err error) bool {
	var ae *APIError
	if !errors.As(err, &ae) || ae.Code != "InvalidParameterValue" {
		return false
	}
	msg := strings.ToLower(ae.Message)
	return strings.Contains(msg, "iam instance profile") || strings.Contains(msg, "iaminstanceprofile")
}

// ProfileWait bounds how long a launch waits for EC2 to see a new
// instance profile.
const ProfileWait = 2 * time.Minute
