package aws

import (
	"context"
	"errors"
	"fmt"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/anycloud/anycloud/provider"
)

// ClientConfig says how to reach EC2: a named profile, static keys, or
// (neither) the default AWS credential chain; an optional endpoint for
// emulators.
type ClientConfig struct {
	Region          string
	Profile         string
	AccessKeyID     string
	SecretAccessKey string
	EndpointURL     string
}

// NewClient builds an EC2 client with the SDK's retries off: short
// retries are the provider's (package doc), so no failure is retried by
// two layers.
func NewClient(ctx context.Context, c ClientConfig) (*ec2.Client, string, error) {
	opts := []func(*config.LoadOptions) error{
		config.WithRetryer(func() sdkaws.Retryer { return sdkaws.NopRetryer{} }),
	}
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	if c.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(c.Profile))
	}
	if c.AccessKeyID != "" {
		if c.SecretAccessKey == "" {
			return nil, "", errors.New("static AWS keys: the secret access key is missing")
		}
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, "", fmt.Errorf("load AWS configuration: %w: %v", provider.ErrInvalid, err)
	}
	if cfg.Region == "" {
		return nil, "", fmt.Errorf("no AWS region: set spec.aws.region in the credentials (or AWS_REGION): %w", provider.ErrInvalid)
	}
	client := ec2.NewFromConfig(cfg, func(o *ec2.Options) {
		if c.EndpointURL != "" {
			o.BaseEndpoint = sdkaws.String(c.EndpointURL)
		}
	})
	return client, cfg.Region, nil
}
