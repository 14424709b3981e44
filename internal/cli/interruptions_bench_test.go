package cli

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/eventbridge"
	ebtypes "github.com/aws/aws-sdk-go-v2/service/eventbridge/types"
)

// BenchmarkInterruptionsAWS measures, through the cloud emulator, how soon
// a replacement's RunInstances follows what EC2 does to a VM, side by
// side in one run:
//
//   - events/warning: an interruption warning put on EventBridge (moto
//     routes it through anycloud's rule to its SQS queue) → the
//     replacement's RunInstances. DESIGN: p50 under 1 s.
//   - events/terminated: the instance terminated from outside and EC2's
//     state-change event put on EventBridge → RunInstances.
//   - resync-30s, poll-15s: the instance terminated from outside with
//     interruptions off, noticed only by the resync at the default 30 s, and
//     at 15 s (SkyPilot's polling period).
//
// Each round waits for the replacement to be Ready before the next, so
// every VM is recovered from a settled state.
func BenchmarkInterruptionsAWS(b *testing.B) {
	b.Run("events", func(b *testing.B) {
		a := newAWSEnvFor(b, 10*time.Minute)
		bus := a.eventBus()
		name := a.name("events")
		a.must("submit", a.image, "--name", name, "--credentials", "moto", "--vm-type", "t3.micro", "--spot", "--wait", "--timeout", "3m")
		a.eventually("the interruption queue consumed", func() bool { return a.proxy.Count("ReceiveMessage") > 0 })
		var warned, terminated []time.Duration
		for b.Loop() {
			for range 5 {
				id := a.deploymentVM(name)
				took := a.untilRunInstances(func() {
					a.sendEvent(bus, "EC2 Spot Instance Interruption Warning", map[string]any{"instance-id": id, "instance-action": "terminate"})
				})
				warned = append(warned, took)
				a.readyOn(name, a.waitVM(name, id))
			}
			for range 5 {
				id := a.deploymentVM(name)
				took := a.untilRunInstances(func() {
					outside(a, id)
					a.sendEvent(bus, "EC2 Instance State-change Notification", map[string]any{"instance-id": id, "state": "shutting-down"})
				})
				terminated = append(terminated, took)
				a.readyOn(name, a.waitVM(name, id))
			}
		}
		b.ReportMetric(median(warned).Seconds(), "s-warning-to-runinstances-p50")
		b.ReportMetric(slicesMax(warned).Seconds(), "s-warning-to-runinstances-max")
		b.ReportMetric(median(terminated).Seconds(), "s-terminated-to-runinstances-p50")
	})
	for _, c := range []struct {
		name   string
		resync time.Duration
	}{{"resync-30s", 30 * time.Second}, {"poll-15s", 15 * time.Second}} {
		b.Run(c.name, func(b *testing.B) {
			a := newAWSEnvFor(b, c.resync)
			a.env.vars["AWS_SECRET_ACCESS_KEY"] = "testing"
			a.must("credentials", "new", "moto", "--provider", "aws", "--region", "us-east-1",
				"--endpoint-url", a.cloud.Endpoint, "--access-key-id", "testing", "--interruptions", "off")
			delete(a.env.vars, "AWS_SECRET_ACCESS_KEY")
			name := a.name("resync")
			a.must("submit", a.image, "--name", name, "--credentials", "moto", "--vm-type", "t3.micro", "--spot", "--wait", "--timeout", "3m")
			var terminated []time.Duration
			for b.Loop() {
				for range 3 {
					id := a.deploymentVM(name)
					terminated = append(terminated, a.untilRunInstances(func() { outside(a, id) }))
					a.readyOn(name, a.waitVM(name, id))
				}
			}
			b.ReportMetric(median(terminated).Seconds(), "s-terminated-to-runinstances-p50")
			b.ReportMetric(slicesMax(terminated).Seconds(), "s-terminated-to-runinstances-max")
		})
	}
}

// untilRunInstances does what and times it until the proxy in front of
// moto has seen one more RunInstances.
func (a *awsEnv) untilRunInstances(what func()) time.Duration {
	a.t.Helper()
	before := a.proxy.Count("RunInstances")
	start := time.Now()
	what()
	deadline := start.Add(2 * time.Minute)
	for a.proxy.Count("RunInstances") == before {
		if time.Now().After(deadline) {
			a.t.Fatal("no replacement RunInstances within 2 minutes")
		}
		time.Sleep(2 * time.Millisecond)
	}
	return time.Since(start)
}

// eventBus is an EventBridge client straight to moto, as EC2 itself sends
// events: the AWS CLI would add a second of Python start-up to each.
func (a *awsEnv) eventBus() *eventbridge.Client {
	return eventbridge.New(eventbridge.Options{
		Region:       "us-east-1",
		BaseEndpoint: sdkaws.String(a.moto),
		Credentials:  credentials.NewStaticCredentialsProvider("testing", "testing", ""),
	})
}

func (a *awsEnv) sendEvent(bus *eventbridge.Client, detailType string, detail map[string]any) {
	a.t.Helper()
	d, _ := json.Marshal(detail)
	out, err := bus.PutEvents(context.Background(), &eventbridge.PutEventsInput{Entries: []ebtypes.PutEventsRequestEntry{{
		Source: sdkaws.String("aws.ec2"), DetailType: sdkaws.String(detailType), Detail: sdkaws.String(string(d)),
	}}})
	if err != nil {
		a.t.Fatalf("put-events: %v", err)
	}
	if out.FailedEntryCount != 0 {
		a.t.Fatalf("put-events: %d entries failed", out.FailedEntryCount)
	}
}

func slicesMax(d []time.Duration) time.Duration {
	m := d[0]
	for _, x := range d {
		m = max(m, x)
	}
	return m
}
