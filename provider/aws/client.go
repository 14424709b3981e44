package aws

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/sts"

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

// Clients are the AWS service clients of one credentials and region.
type Clients struct {
	EC2         *ec2.Client
	SSM         *ssm.Client
	SQS         *sqs.Client
	EventBridge *eventbridge.Client
	IAM         *iam.Client
	STS         *sts.Client
	Region      string
}

// NewClient builds an EC2 client (see NewClients) and returns it with its
// region.
func NewClient(ctx context.Context, c ClientConfig) (*ec2.Client, string, error) {
	cl, err := NewClients(ctx, c)
	if err != nil {
		return nil, "", err
	}
	return cl.EC2, cl.Region, nil
}

// NewClients builds the service clients with the SDK's retries off: short
// retries are the provider's (package doc), so no failure is retried by
// two layers. An EndpointURL serves every service (emulators such as moto
// do).
func NewClients(ctx context.Context, c ClientConfig) (*Clients, error) {
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
			return nil, errors.New("static AWS keys: the secret access key is missing")
		}
		opts = append(opts, config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider(c.AccessKeyID, c.SecretAccessKey, "")))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("load AWS configuration: %w: %w", provider.ErrInvalid, err)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("no AWS region: set spec.aws.region in the credentials (or AWS_REGION): %w", provider.ErrInvalid)
	}
	var endpoint *string
	if c.EndpointURL != "" {
		endpoint = sdkaws.String(c.EndpointURL)
	}
	return &Clients{
		EC2:         ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.BaseEndpoint = endpoint }),
		SSM:         ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.BaseEndpoint = endpoint }),
		SQS:         sqs.NewFromConfig(cfg, func(o *sqs.Options) { o.BaseEndpoint = endpoint }),
		EventBridge: eventbridge.NewFromConfig(cfg, func(o *eventbridge.Options) { o.BaseEndpoint = endpoint }),
		IAM:         iam.NewFromConfig(cfg, func(o *iam.Options) { o.BaseEndpoint = endpoint }),
		STS:         sts.NewFromConfig(cfg, func(o *sts.Options) { o.BaseEndpoint = endpoint }),
		Region:      cfg.Region,
	}, nil
}

// IsLoopbackEndpoint reports whether an endpoint URL names this machine:
// an emulator, whose instance addresses are not to be dialled unless a VM
// emulator made them loopback addresses (SSH.LoopbackOnly).
func IsLoopbackEndpoint(endpoint string) bool {
	u, err := url.Parse(endpoint)
	if err != nil || u.Hostname() == "" {
		return false
	}
	if u.Hostname() == "localhost" {
		return true
	}
	ip := net.ParseIP(u.Hostname())
	return ip != nil && ip.IsLoopback()
}
