package aws

import (
	"context"
	"fmt"
	"regexp"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sts"

	"github.com/anycloud/anycloud/provider"
)

// STSAPI is what the provider uses of the STS client: session
// credentials for a bucket of this account that a VM of another
// account's deployment reads.
type STSAPI interface {
	GetFederationToken(ctx context.Context, params *sts.GetFederationTokenInput, optFns ...func(*sts.Options)) (*sts.GetFederationTokenOutput, error)
}

// FederationDuration is how long minted bucket credentials last: STS's
// longest for GetFederationToken. They are minted at every VM creation
// and not refreshed while the VM runs.
const FederationDuration = 36 * time.Hour

// federationNameRE is what GetFederationToken accepts as a name, less
// than its 32 characters.
var federationNameRE = regexp.MustCompile(`[^\w+=,.@-]`)

// Federate implements provider.Federator: STS GetFederationToken for 36
// hours with an inline session policy that allows exactly the bucket's
// prefix (the credentials can do no more than both it and this
// account's own credentials allow). name says who they are for (the
// deployment), in CloudTrail.
func (p *Provider) Federate(ctx context.Context, name string, b provider.Bucket) (provider.SessionCredentials, error) {
	if p.sts == nil {
		return provider.SessionCredentials{}, fmt.Errorf("credentials for bucket %s need an STS client: %w", b.URI, provider.ErrInvalid)
	}
	policy, _ := BucketPolicy([]provider.Bucket{b})
	fedName := federationNameRE.ReplaceAllString("anycloud-"+name, "-")
	if len(fedName) > 32 {
		fedName = fedName[:32]
	}
	var out *sts.GetFederationTokenOutput
	err := p.call(ctx, p.limits.iam, "GetFederationToken", func(ctx context.Context) error {
		var err error
		out, err = p.sts.GetFederationToken(ctx, &sts.GetFederationTokenInput{
			Name: sdkaws.String(fedName), DurationSeconds: sdkaws.Int32(int32(FederationDuration / time.Second)), Policy: sdkaws.String(policy),
		})
		return err
	})
	if err != nil {
		return provider.SessionCredentials{}, fmt.Errorf("session credentials for bucket %s: %w", b.URI, err)
	}
	c := out.Credentials
	if c == nil {
		return provider.SessionCredentials{}, fmt.Errorf("session credentials for bucket %s: STS returned none", b.URI)
	}
	return provider.SessionCredentials{
		AccessKeyID: sdkaws.ToString(c.AccessKeyId), SecretAccessKey: sdkaws.ToString(c.SecretAccessKey), SessionToken: sdkaws.ToString(c.SessionToken),
		Expires: sdkaws.ToTime(c.Expiration).UTC(), Region: p.region, Endpoint: p.s3Endpoint,
	}, nil
}

var _ provider.Federator = (*Provider)(nil)
