package aws

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	sqstypes "github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/cenkalti/backoff/v4"

	"github.com/anycloud/anycloud/provider"
)

// SQSAPI is what the provider uses of the SQS client.
type SQSAPI interface {
	CreateQueue(ctx context.Context, params *sqs.CreateQueueInput, optFns ...func(*sqs.Options)) (*sqs.CreateQueueOutput, error)
	GetQueueUrl(ctx context.Context, params *sqs.GetQueueUrlInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueUrlOutput, error)
	GetQueueAttributes(ctx context.Context, params *sqs.GetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.GetQueueAttributesOutput, error)
	SetQueueAttributes(ctx context.Context, params *sqs.SetQueueAttributesInput, optFns ...func(*sqs.Options)) (*sqs.SetQueueAttributesOutput, error)
	ReceiveMessage(ctx context.Context, params *sqs.ReceiveMessageInput, optFns ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessageBatch(ctx context.Context, params *sqs.DeleteMessageBatchInput, optFns ...func(*sqs.Options)) (*sqs.DeleteMessageBatchOutput, error)
	DeleteQueue(ctx context.Context, params *sqs.DeleteQueueInput, optFns ...func(*sqs.Options)) (*sqs.DeleteQueueOutput, error)
}

// EventBridgeAPI is what the provider uses of the EventBridge client.
type EventBridgeAPI interface {
	PutRule(ctx context.Context, params *eventbridge.PutRuleInput, optFns ...func(*eventbridge.Options)) (*eventbridge.PutRuleOutput, error)
	PutTargets(ctx context.Context, params *eventbridge.PutTargetsInput, optFns ...func(*eventbridge.Options)) (*eventbridge.PutTargetsOutput, error)
	RemoveTargets(ctx context.Context, params *eventbridge.RemoveTargetsInput, optFns ...func(*eventbridge.Options)) (*eventbridge.RemoveTargetsOutput, error)
	DeleteRule(ctx context.Context, params *eventbridge.DeleteRuleInput, optFns ...func(*eventbridge.Options)) (*eventbridge.DeleteRuleOutput, error)
}

// Interruptions says how a scope hears EC2's events (Options).
type Interruptions struct {
	// Off listens to none: the resync alone notices.
	Off bool
	// Queue names an existing SQS queue to consume; anycloud makes and
	// removes nothing. Empty: anycloud makes the queue and the rules.
	Queue string
	SQS   SQSAPI
	// EventBridge makes the rules (unused with Queue).
	EventBridge EventBridgeAPI
	// Wait is the long poll of one receive (default 20s, SQS's longest).
	Wait time.Duration
}

// The EventBridge rules anycloud makes, by name suffix: each sends its
// events to the queue.
var interruptionRules = []struct{ suffix, pattern string }{
	{"spot-interruption", `{"source":["aws.ec2"],"detail-type":["EC2 Spot Instance Interruption Warning"]}`},
	{"rebalance", `{"source":["aws.ec2"],"detail-type":["EC2 Instance Rebalance Recommendation"]}`},
	{"state-change", `{"source":["aws.ec2"],"detail-type":["EC2 Instance State-change Notification"]}`},
	{"scheduled-change", `{"source":["aws.health"],"detail-type":["AWS Health Event"],"detail":{"service":["EC2"],"eventTypeCategory":["scheduledChange"]}}`},
}

// queueName is the queue anycloud makes for this scope (credentials and
// region): named after the cluster, so that two control planes sharing
// an account never share (and steal) events, and after the scope, so that
// two credentials of one account and region do not either. Each scope's
// rules feed its own queue, so each consumer sees every event and keeps
// those of its own VMs; removing one scope's queue leaves the others'.
// The scope is hashed: credentials names are long, and a rule name may
// be 64 characters ("anycloud-" + 16 + "-" + 8 + "-scheduled-change" is
// 51).
func (p *Provider) queueName() string { return "anycloud-" + p.cluster + "-" + p.scopeID() }

func (p *Provider) ruleName(suffix string) string { return p.queueName() + "-" + suffix }

// scopeID is a short, stable name of the scope: 8 hex digits of the
// SHA-256 of its key ("aws/<credentials>/<region>").
func (p *Provider) scopeID() string {
	sum := sha256.Sum256([]byte(p.key))
	return hex.EncodeToString(sum[:4])
}

// tagMap tags the queue and rules as this cluster's, and names the scope
// (its key) for whoever finds them in the console.
func (p *Provider) tagMap() map[string]string {
	return map[string]string{TagManaged: "true", TagCluster: p.cluster, TagScope: p.key}
}

// Interruptions implements provider.Interrupter: it makes (auto) or finds
// (a named queue) the queue, then long-polls it, 10 messages and 20
// seconds at a time, handing each event over and deleting it after. An
// event is handled at least once: SQS may deliver one twice, and the
// controller makes a duplicate change nothing.
func (p *Provider) Interruptions(ctx context.Context, handle func(provider.Interruption)) error {
	in := p.interruptions
	if in.Off || in.SQS == nil {
		return provider.ErrInterruptionsOff
	}
	url, err := p.ensureQueue(ctx)
	if err != nil {
		return err
	}
	wait := in.Wait
	if wait == 0 {
		wait = 20 * time.Second
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = time.Second, time.Minute, 0
	for ctx.Err() == nil {
		var out *sqs.ReceiveMessageOutput
		err := p.call(ctx, p.limits.sqs, "ReceiveMessage", func(ctx context.Context) error {
			var err error
			out, err = in.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
				QueueUrl: sdkaws.String(url), MaxNumberOfMessages: 10, WaitTimeSeconds: int32(wait / time.Second),
			})
			return err
		})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(bo.NextBackOff()):
			}
			continue
		}
		bo.Reset()
		var done []sqstypes.DeleteMessageBatchRequestEntry
		for i, m := range out.Messages {
			for _, ev := range parseEvent(sdkaws.ToString(m.Body)) {
				handle(ev)
			}
			done = append(done, sqstypes.DeleteMessageBatchRequestEntry{Id: sdkaws.String(fmt.Sprint(i)), ReceiptHandle: m.ReceiptHandle})
		}
		if len(done) > 0 {
			p.call(ctx, p.limits.sqs, "DeleteMessageBatch", func(ctx context.Context) error {
				_, err := in.SQS.DeleteMessageBatch(ctx, &sqs.DeleteMessageBatchInput{QueueUrl: sdkaws.String(url), Entries: done})
				return err
			})
		}
	}
	return nil
}

// ensureQueue returns the queue's URL, making the queue, its policy and
// the rules that feed it unless a queue was named.
func (p *Provider) ensureQueue(ctx context.Context) (string, error) {
	in := p.interruptions
	if in.Queue != "" {
		var out *sqs.GetQueueUrlOutput
		err := p.call(ctx, p.limits.sqs, "GetQueueUrl", func(ctx context.Context) error {
			var err error
			out, err = in.SQS.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: sdkaws.String(in.Queue)})
			return err
		})
		if err != nil {
			return "", fmt.Errorf("interruption queue %s: %w", in.Queue, err)
		}
		return sdkaws.ToString(out.QueueUrl), nil
	}
	p.removeSharedQueue(ctx)
	var created *sqs.CreateQueueOutput
	err := p.call(ctx, p.limits.sqs, "CreateQueue", func(ctx context.Context) error {
		var err error
		created, err = in.SQS.CreateQueue(ctx, &sqs.CreateQueueInput{
			QueueName: sdkaws.String(p.queueName()),
			// Events older than five minutes are of VMs long gone.
			Attributes: map[string]string{"MessageRetentionPeriod": "300", "SqsManagedSseEnabled": "true"},
			Tags:       p.tagMap(),
		})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("make the interruption queue: %w", err)
	}
	url := sdkaws.ToString(created.QueueUrl)
	var attrs *sqs.GetQueueAttributesOutput
	err = p.call(ctx, p.limits.sqs, "GetQueueAttributes", func(ctx context.Context) error {
		var err error
		attrs, err = in.SQS.GetQueueAttributes(ctx, &sqs.GetQueueAttributesInput{QueueUrl: created.QueueUrl, AttributeNames: []sqstypes.QueueAttributeName{sqstypes.QueueAttributeNameQueueArn}})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("interruption queue %s: %w", p.queueName(), err)
	}
	queueARN := attrs.Attributes[string(sqstypes.QueueAttributeNameQueueArn)]
	var ruleARNs []string
	var tags []ebtypes.Tag
	for k, v := range p.tagMap() {
		tags = append(tags, ebtypes.Tag{Key: sdkaws.String(k), Value: sdkaws.String(v)})
	}
	for _, r := range interruptionRules {
		var out *eventbridge.PutRuleOutput
		err := p.call(ctx, p.limits.mutate, "PutRule", func(ctx context.Context) error {
			var err error
			out, err = in.EventBridge.PutRule(ctx, &eventbridge.PutRuleInput{
				Name: sdkaws.String(p.ruleName(r.suffix)), EventPattern: sdkaws.String(r.pattern), Tags: tags,
				Description: sdkaws.String("anycloud " + p.cluster + ": EC2 events about its instances, to its queue"),
			})
			return err
		})
		if err != nil {
			return "", fmt.Errorf("make interruption rule %s: %w", p.ruleName(r.suffix), err)
		}
		ruleARNs = append(ruleARNs, sdkaws.ToString(out.RuleArn))
		err = p.call(ctx, p.limits.mutate, "PutTargets", func(ctx context.Context) error {
			_, err := in.EventBridge.PutTargets(ctx, &eventbridge.PutTargetsInput{
				Rule: sdkaws.String(p.ruleName(r.suffix)), Targets: []ebtypes.Target{{Id: sdkaws.String("anycloud-queue"), Arn: sdkaws.String(queueARN)}},
			})
			return err
		})
		if err != nil {
			return "", fmt.Errorf("point rule %s at the queue: %w", p.ruleName(r.suffix), err)
		}
	}
	// Only these rules may send to the queue.
	policy, _ := json.Marshal(map[string]any{
		"Version": "2012-10-17",
		"Statement": []map[string]any{{
			"Sid": "EventBridgeToAnycloud", "Effect": "Allow",
			"Principal": map[string]any{"Service": []string{"events.amazonaws.com", "sqs.amazonaws.com"}},
			"Action":    "sqs:SendMessage", "Resource": queueARN,
			"Condition": map[string]any{"ArnEquals": map[string]any{"aws:SourceArn": ruleARNs}},
		}},
	})
	err = p.call(ctx, p.limits.sqs, "SetQueueAttributes", func(ctx context.Context) error {
		_, err := in.SQS.SetQueueAttributes(ctx, &sqs.SetQueueAttributesInput{QueueUrl: created.QueueUrl, Attributes: map[string]string{"Policy": string(policy)}})
		return err
	})
	if err != nil {
		return "", fmt.Errorf("set the interruption queue's policy: %w", err)
	}
	return url, nil
}

// RemoveInterruptions implements provider.Interrupter: the rules and the
// queue anycloud made go; a named queue is the user's and stays.
func (p *Provider) RemoveInterruptions(ctx context.Context) error {
	in := p.interruptions
	if in.Off || in.Queue != "" || in.SQS == nil || in.EventBridge == nil {
		return nil
	}
	return p.removeQueue(ctx, p.queueName())
}

// removeQueue deletes the queue named queue and its rules (queue + "-" +
// suffix); what is already gone is not an error.
func (p *Provider) removeQueue(ctx context.Context, queue string) error {
	in := p.interruptions
	var errs []error
	for _, r := range interruptionRules {
		name := queue + "-" + r.suffix
		err := p.call(ctx, p.limits.mutate, "RemoveTargets", func(ctx context.Context) error {
			_, err := in.EventBridge.RemoveTargets(ctx, &eventbridge.RemoveTargetsInput{Rule: sdkaws.String(name), Ids: []string{"anycloud-queue"}})
			return err
		})
		if err == nil || gone(err) {
			err = p.call(ctx, p.limits.mutate, "DeleteRule", func(ctx context.Context) error {
				_, err := in.EventBridge.DeleteRule(ctx, &eventbridge.DeleteRuleInput{Name: sdkaws.String(name)})
				return err
			})
		}
		if err != nil && !gone(err) {
			errs = append(errs, fmt.Errorf("remove interruption rule %s: %w", name, err))
		}
	}
	var url *sqs.GetQueueUrlOutput
	err := p.call(ctx, p.limits.sqs, "GetQueueUrl", func(ctx context.Context) error {
		var err error
		url, err = in.SQS.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: sdkaws.String(queue)})
		return err
	})
	if err == nil {
		err = p.call(ctx, p.limits.sqs, "DeleteQueue", func(ctx context.Context) error {
			_, err := in.SQS.DeleteQueue(ctx, &sqs.DeleteQueueInput{QueueUrl: url.QueueUrl})
			return err
		})
	}
	if err != nil && !gone(err) {
		errs = append(errs, fmt.Errorf("remove the interruption queue %s: %w", queue, err))
	}
	return errors.Join(errs...)
}

// removeSharedQueue removes the queue and rules that control planes
// before per-scope queues made for every scope of the account and region
// at once ("anycloud-<cluster>"), if they are there: its consumers are
// gone, and it would keep collecting events nobody reads. One
// GetQueueUrl when it is not there.
func (p *Provider) removeSharedQueue(ctx context.Context) {
	shared := "anycloud-" + p.cluster
	err := p.call(ctx, p.limits.sqs, "GetQueueUrl", func(ctx context.Context) error {
		_, err := p.interruptions.SQS.GetQueueUrl(ctx, &sqs.GetQueueUrlInput{QueueName: sdkaws.String(shared)})
		return err
	})
	if err == nil {
		p.removeQueue(ctx, shared) // best effort: a failure leaves what a later start removes
	}
}

// gone reports an error that says the thing is not there.
func gone(err error) bool {
	return errors.Is(err, provider.ErrNotFound) || strings.Contains(err.Error(), "NonExistentQueue") ||
		strings.Contains(err.Error(), "ResourceNotFound") || strings.Contains(err.Error(), "QueueDoesNotExist")
}

// ec2Event is the part of an EventBridge event that anycloud reads.
type ec2Event struct {
	DetailType string          `json:"detail-type"`
	Time       time.Time       `json:"time"`
	Detail     json.RawMessage `json:"detail"`
}

// parseEvent reads one queued event; what it cannot read is no event.
func parseEvent(body string) []provider.Interruption {
	var ev ec2Event
	if json.Unmarshal([]byte(body), &ev) != nil {
		return nil
	}
	var d struct {
		InstanceID     string `json:"instance-id"`
		InstanceAction string `json:"instance-action"`
		State          string `json:"state"`
		EventTypeCode  string `json:"eventTypeCode"`
		Entities       []struct {
			Value string `json:"entityValue"`
		} `json:"affectedEntities"`
	}
	if json.Unmarshal(ev.Detail, &d) != nil {
		return nil
	}
	one := func(k provider.InterruptionKind, st provider.State, detail string) []provider.Interruption {
		if d.InstanceID == "" {
			return nil
		}
		return []provider.Interruption{{Kind: k, VMID: d.InstanceID, State: st, Detail: detail, At: ev.Time}}
	}
	switch ev.DetailType {
	case "EC2 Spot Instance Interruption Warning":
		return one(provider.InterruptionWarning, "", "EC2 Spot Instance Interruption Warning: "+d.InstanceAction)
	case "EC2 Instance Rebalance Recommendation":
		return one(provider.RebalanceRecommendation, "", "EC2 Instance Rebalance Recommendation")
	case "EC2 Instance State-change Notification":
		st, ok := map[string]provider.State{
			"pending": provider.StatePending, "running": provider.StateRunning, "stopping": provider.StateStopping,
			"stopped": provider.StateStopped, "shutting-down": provider.StateTerminated, "terminated": provider.StateTerminated,
		}[d.State]
		if !ok {
			return nil
		}
		return one(provider.StateChange, st, "EC2 Instance State-change Notification: "+d.State)
	case "AWS Health Event":
		var out []provider.Interruption
		for _, e := range d.Entities {
			if strings.HasPrefix(e.Value, "i-") {
				out = append(out, provider.Interruption{Kind: provider.ScheduledChange, VMID: e.Value, Detail: "AWS Health: " + d.EventTypeCode, At: ev.Time})
			}
		}
		return out
	}
	return nil
}

var _ provider.Interrupter = (*Provider)(nil)
