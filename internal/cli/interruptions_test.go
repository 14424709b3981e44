package cli

// End-to-end tests of EC2's events through the cloud emulator: moto
// routes events sent with `aws events put-events` through the EventBridge
// rules anycloud made to its SQS queue, as EC2 would send them.

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/anycloud/anycloud/internal/ec2proxy"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
)

// putEvent sends one EC2 event as EC2 would, from outside (the AWS CLI,
// straight to moto).
func (a *awsEnv) putEvent(detailType, source string, detail map[string]any) {
	a.t.Helper()
	d, _ := json.Marshal(detail)
	entries, _ := json.Marshal([]map[string]string{{"Source": source, "DetailType": detailType, "Detail": string(d)}})
	out := testenv.AWSCLI(a.t, a.moto, "events", "put-events", "--entries", string(entries), "--output", "json")
	if !strings.Contains(out, `"FailedEntryCount": 0`) {
		a.t.Fatalf("put-events: %s", out)
	}
}

func (a *awsEnv) instanceState(id string) types.InstanceStateName {
	a.t.Helper()
	for _, in := range a.instances() {
		if sdkaws.ToString(in.InstanceId) == id {
			return in.State.Name
		}
	}
	return ""
}

// cluster is the control plane's id, which names its queue and rules.
func (a *awsEnv) clusterID() string { return a.env.cluster }

// TestAnInterruptionWarningReplacesTheVMBeforeItIsTakenBack: the warning
// reaches the control plane through EventBridge and SQS (the resync is 10
// minutes, so nothing else could tell), the replacement is launched while
// the warned VM still runs, the warned VM is terminated once the
// replacement is Ready, and a duplicated delivery of the warning changes
// nothing.
func TestAnInterruptionWarningReplacesTheVMBeforeItIsTakenBack(t *testing.T) {
	a := newAWSEnvFor(t, 10*time.Minute)
	name := a.name("warned")
	a.must("secrets", "new", "hf", "HF_TOKEN=first")
	a.must("submit", a.image, "--name", name, "--credentials", "moto", "--vm-type", "t3.micro", "--spot", "--secret", "hf", "--wait", "--timeout", "3m")
	first := a.deploymentVM(name)
	a.must("secrets", "new", "hf", "HF_TOKEN=rotated")
	a.eventually("the interruption queue consumed", func() bool { return a.proxy.Count("ReceiveMessage") > 0 })

	a.putEvent("EC2 Spot Instance Interruption Warning", "aws.ec2", map[string]any{"instance-id": first, "instance-action": "terminate"})
	a.eventually("the warning handled", func() bool {
		return strings.Contains(a.must("describe", "deploy", name).stdout, "CloudEvent")
	})
	// SQS delivers the same warning twice more.
	a.proxy.Inject("ReceiveMessage", ec2proxy.Replay, ec2proxy.Replay)

	// Make before break: both VMs in the status while the replacement
	// starts, the warned one still running.
	var second string
	overlap := false
	a.eventually("the replacement Ready", func() bool {
		d, err := getDeployment(a.env, name)
		if err != nil || d.Status.VM == nil {
			return false
		}
		if dr := d.Status.Draining; dr != nil && dr.ID == first && d.Status.VM.ID != first && a.instanceState(first) == types.InstanceStateNameRunning {
			overlap = true
		}
		c := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
		if d.Status.VM.ID != first && d.Status.VM.Bootstrapped && c != nil && c.Status == manifests.ConditionTrue && d.Status.Draining == nil {
			second = d.Status.VM.ID
			return true
		}
		return false
	})
	if !overlap {
		t.Error("never saw the replacement starting while the warned VM ran (make before break)")
	}
	a.eventually("the warned VM terminated", func() bool {
		st := a.instanceState(first)
		return st == types.InstanceStateNameTerminated || st == types.InstanceStateNameShuttingDown
	})
	if env := a.workloadEnv(name); env["HF_TOKEN"] != "rotated" {
		t.Errorf("the replacement's workload has HF_TOKEN %q, want the rotated value", env["HF_TOKEN"])
	}
	// The duplicates were delivered and handled, and launched nothing.
	a.eventually("the duplicates delivered", func() bool { return a.proxy.Pending("ReceiveMessage") == 0 })
	a.env.settled(0)
	if got := a.proxy.Count("RunInstances"); got != 2 {
		t.Errorf("RunInstances = %d, want 2: one replacement for one warning, however often delivered", got)
	}
	d := a.ready(name)
	if d.Status.VM.ID != second || d.Status.Recoveries != 1 {
		t.Errorf("after the duplicates: VM %s, recoveries %d", d.Status.VM.ID, d.Status.Recoveries)
	}
	ev := a.must("describe", "deploy", name).stdout
	for _, want := range []string{"InterruptionWarning", "Drained"} {
		if !strings.Contains(ev, want) {
			t.Errorf("describe lacks %s:\n%s", want, ev)
		}
	}
	m := a.scrape()
	if metric(m, `anycloud_interruption_events_total{type="interruption_warning"}`) < 1 || metric(m, `anycloud_recoveries_total{reason="warned"}`) != 1 {
		t.Errorf("metrics after a warning:\n%s", m)
	}
}

// TestAStateChangeEventStartsRecoveryWithoutAResync: the instance is
// terminated behind anycloud's back and EC2's state-change event arrives;
// with a 10-minute resync, only the event can start the recovery.
func TestAStateChangeEventStartsRecoveryWithoutAResync(t *testing.T) {
	a := newAWSEnvFor(t, 10*time.Minute)
	name := a.name("changed")
	a.must("submit", a.image, "--name", name, "--credentials", "moto", "--vm-type", "t3.micro", "--spot", "--wait", "--timeout", "3m")
	first := a.deploymentVM(name)
	a.eventually("the interruption queue consumed", func() bool { return a.proxy.Count("ReceiveMessage") > 0 })
	testenv.AWSCLI(t, a.moto, "ec2", "terminate-instances", "--instance-ids", first)
	a.putEvent("EC2 Instance State-change Notification", "aws.ec2", map[string]any{"instance-id": first, "state": "shutting-down"})
	a.eventually("a replacement", func() bool {
		d, err := getDeployment(a.env, name)
		return err == nil && d.Status.VM != nil && d.Status.VM.ID != first && d.Status.Recoveries == 1
	})
	if ev := a.must("describe", "deploy", name).stdout; !strings.Contains(ev, "State-change Notification: shutting-down") {
		t.Errorf("the recovery does not say it came from EC2's event:\n%s", ev)
	}
}

// TestTheInterruptionQueueComesAndGoesWithItsCredentials: auto makes a
// queue and four rules named after the control plane and the scope
// (anycloud-<cluster>-<scope hash>), tagged as theirs; a
// credentials delete removes them. off makes nothing; a named queue is
// consumed and left in place.
func TestTheInterruptionQueueComesAndGoesWithItsCredentials(t *testing.T) {
	a := newAWSEnv(t)
	queue := "anycloud-" + a.clusterID()
	rules := func() []string {
		out := testenv.AWSCLI(t, a.moto, "events", "list-rules", "--name-prefix", queue, "--query", "Rules[].Name", "--output", "text")
		return strings.Fields(out)
	}
	queues := func() string {
		return testenv.AWSCLI(t, a.moto, "sqs", "list-queues", "--queue-name-prefix", queue, "--output", "text")
	}
	a.eventually("the queue and the rules made", func() bool { return strings.Contains(queues(), queue) && len(rules()) == 4 })
	urls := strings.Fields(testenv.AWSCLI(t, a.moto, "sqs", "list-queues", "--queue-name-prefix", queue, "--query", "QueueUrls[]", "--output", "text"))
	if len(urls) != 1 {
		t.Fatalf("queues of one credentials and region: %v", urls)
	}
	url := urls[0]
	tags := testenv.AWSCLI(t, a.moto, "sqs", "list-queue-tags", "--queue-url", url, "--output", "json")
	if !strings.Contains(tags, `"anycloud:managed": "true"`) || !strings.Contains(tags, a.clusterID()) || !strings.Contains(tags, `"anycloud:scope": "aws/moto/us-east-1"`) {
		t.Errorf("queue tags: %s", tags)
	}
	policy := testenv.AWSCLI(t, a.moto, "sqs", "get-queue-attributes", "--queue-url", url, "--attribute-names", "Policy", "--output", "text")
	if !strings.Contains(policy, "events.amazonaws.com") || !strings.Contains(policy, "rule/"+queue) {
		t.Errorf("the queue's policy does not let only its rules send: %s", policy)
	}

	a.must("credentials", "delete", "moto")
	a.eventually("the queue and the rules removed", func() bool { return !strings.Contains(queues(), queue) && len(rules()) == 0 })

	// off: nothing made, nothing consumed.
	a.vars["AWS_SECRET_ACCESS_KEY"] = "testing"
	a.must("credentials", "new", "quiet", "--provider", "aws", "--region", "us-east-1",
		"--endpoint-url", a.cloud.Endpoint, "--access-key-id", "testing", "--interruptions", "off")
	// A named queue: consumed, never made or removed by anycloud.
	testenv.AWSCLI(t, a.moto, "sqs", "create-queue", "--queue-name", "mine", "--region", "us-west-2")
	a.must("credentials", "new", "own", "--provider", "aws", "--region", "us-west-2",
		"--endpoint-url", a.cloud.Endpoint, "--access-key-id", "testing", "--interruption-queue", "mine")
	mine := strings.TrimSpace(testenv.AWSCLI(t, a.moto, "sqs", "get-queue-url", "--queue-name", "mine", "--region", "us-west-2", "--query", "QueueUrl", "--output", "text"))
	testenv.AWSCLI(t, a.moto, "sqs", "send-message", "--region", "us-west-2", "--queue-url", mine, "--message-body",
		`{"detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","detail":{"instance-id":"i-0123456789abcdef0"}}`)
	a.eventually("the named queue consumed", func() bool {
		n := testenv.AWSCLI(t, a.moto, "sqs", "get-queue-attributes", "--region", "us-west-2", "--queue-url", mine,
			"--attribute-names", "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible", "--output", "json")
		return strings.Contains(n, `"ApproximateNumberOfMessages": "0"`) && strings.Contains(n, `"ApproximateNumberOfMessagesNotVisible": "0"`)
	})
	a.must("credentials", "delete", "own")
	a.waitForResyncs(2) // the resyncs that follow the delete have let the scope go
	if out := testenv.AWSCLI(t, a.moto, "sqs", "list-queues", "--region", "us-west-2", "--output", "text"); !strings.Contains(out, "mine") {
		t.Errorf("the user's own queue was removed with the credentials: %s", out)
	}
	if strings.Contains(queues(), queue) || len(rules()) != 0 {
		t.Error("credentials with interruptions off made a queue or rules")
	}
	for _, region := range []string{"us-east-1", "us-west-2"} {
		if out := testenv.AWSCLI(t, a.moto, "events", "list-rules", "--region", region, "--name-prefix", "anycloud", "--output", "text"); strings.TrimSpace(out) != "" {
			t.Errorf("rules left in %s: %s", region, out)
		}
	}
}

// deploymentVM is the id of the deployment's current VM.
func (a *awsEnv) deploymentVM(name string) string {
	a.t.Helper()
	d, err := getDeployment(a.env, name)
	if err != nil || d.Status.VM == nil {
		a.t.Fatalf("%s has no VM: %v", name, err)
	}
	return d.Status.VM.ID
}
