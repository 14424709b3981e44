package cli

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/ec2"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/provider/aws/bootstrap"
)

// vmTimes are what the emulator saw of one VM: when its container was
// there, and when its console first showed the host key cloud-init made
// (the VM's own boot, which no control plane can shorten).
type vmTimes struct{ container, keys time.Time }

// followVM polls the emulator for VM id until its host key is on the
// console, from another goroutine.
func (a *awsEnv) followVM(id string) <-chan vmTimes {
	out := make(chan vmTimes, 1)
	go func() {
		var t vmTimes
		deadline := time.Now().Add(5 * time.Minute)
		for time.Now().Before(deadline) {
			if t.container.IsZero() && a.cloud.VMs.Container(id) != "" {
				t.container = time.Now()
			}
			if !t.container.IsZero() {
				if console, ok := a.cloud.VMs.ConsoleOutput(id); ok {
					if _, err := bootstrap.HostKeysFromConsole(console); err == nil {
						t.keys = time.Now()
						break
					}
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		out <- t
	}()
	return out
}

// waitVM waits until the deployment has a VM other than not, and returns
// its id.
func (a *awsEnv) waitVM(name, not string) string {
	var id string
	a.eventually(name+" has a VM", func() bool {
		d, err := getDeployment(a.env, name)
		if err != nil || d.Status.VM == nil || d.Status.VM.ID == not {
			return false
		}
		id = d.Status.VM.ID
		return true
	})
	return id
}

// readyOn waits until the deployment is Ready with its workload started
// on VM id.
func (a *awsEnv) readyOn(name, id string) {
	a.eventually(name+" Ready on "+id, func() bool {
		d, err := getDeployment(a.env, name)
		if err != nil || d.Status.VM == nil || d.Status.VM.ID != id || !d.Status.VM.Bootstrapped {
			return false
		}
		c := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady)
		return c != nil && c.Status == manifests.ConditionTrue
	})
}

func median(d []time.Duration) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)/2]
}

// BenchmarkAWSEmulatorApplyToReadyAndPreemptionToReady measures, through
// the cloud emulator (real cloud-init VMs) with the default 30s resync,
// the time from submit to Ready and from an outside termination to the
// replacement's Ready, each split into the VM's own boot (its container
// up → host key on its console) and the rest: anycloud's share (launch,
// noticing the VM runs, pinning, SSH, docker run) plus moto's.
func BenchmarkAWSEmulatorApplyToReadyAndPreemptionToReady(b *testing.B) {
	a := newAWSEnvFor(b, 30*time.Second)
	const rounds = 3
	var total, boot, ptotal, pboot []time.Duration
	for b.Loop() {
		for i := range rounds {
			name := a.name(fmt.Sprintf("bench%d", i))
			start := time.Now()
			a.must("submit", a.image, "--name", name, "--credentials", "moto", "--vm-type", "t3.micro", "--spot")
			id := a.waitVM(name, "")
			vm := a.followVM(id)
			a.readyOn(name, id)
			total = append(total, time.Since(start))
			t := <-vm
			boot = append(boot, t.keys.Sub(t.container))

			// Preemption: EC2 takes the instance (from outside, straight
			// to moto); the resync (30s) or nothing sooner notices.
			start = time.Now()
			outside(a, id)
			next := a.waitVM(name, id)
			vm = a.followVM(next)
			a.readyOn(name, next)
			ptotal = append(ptotal, time.Since(start))
			t = <-vm
			pboot = append(pboot, t.keys.Sub(t.container))
		}
	}
	b.ReportMetric(median(total).Seconds(), "s-apply-to-ready-p50")
	b.ReportMetric(median(boot).Seconds(), "s-vm-boot-p50")
	b.ReportMetric((median(total) - median(boot)).Seconds(), "s-anycloud-and-moto-p50")
	b.ReportMetric(median(ptotal).Seconds(), "s-preempt-to-ready-p50")
	b.ReportMetric(median(pboot).Seconds(), "s-replacement-boot-p50")
}

// outside terminates an instance as EC2 would, behind anycloud's back.
func outside(a *awsEnv, id string) {
	a.t.Helper()
	// The AWS CLI is slow to start; the SDK straight to moto is the same
	// call without a second of Python.
	if _, err := a.outside.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		a.t.Fatal(err)
	}
}
