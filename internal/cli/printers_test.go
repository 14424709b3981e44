package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// During make before break both VMs show: the table's VM column and
// describe name the draining one beside its replacement.
func TestTheDrainingVMIsShownBesideItsReplacement(t *testing.T) {
	now := time.Date(2026, 12, 3, 12, 0, 0, 0, time.UTC)
	d := &manifests.Deployment{
		TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindDeployment},
		Metadata: manifests.ObjectMeta{Name: "train", CreationTimestamp: now.Add(-time.Hour)},
		Spec:     manifests.DeploymentSpec{Image: "x", Credentials: "aws", AWS: &manifests.DeploymentAWS{SubnetIDs: []string{"subnet-a", "subnet-b"}}},
		Status: manifests.DeploymentStatus{
			VM:       &manifests.VMStatus{ID: "i-new", Market: "spot", LaunchedAt: now.Add(-10 * time.Second), Attempt: 2},
			Draining: &manifests.VMStatus{ID: "i-old", Market: "spot", LaunchedAt: now.Add(-time.Hour), Attempt: 1},
		},
	}
	if got := vmID(d); got != "i-new (+i-old draining)" {
		t.Errorf("VM column = %q", got)
	}
	var b bytes.Buffer
	describe(&b, now, d, nil)
	for _, want := range []string{"Draining VM:", "i-old", "its replacement is Ready", "AWS subnets:", "subnet-a, subnet-b"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("describe lacks %q:\n%s", want, b.String())
		}
	}
	d.Status.Draining, d.Spec.AWS = nil, &manifests.DeploymentAWS{}
	b.Reset()
	describe(&b, now, d, nil)
	if strings.Contains(b.String(), "Draining") || !strings.Contains(b.String(), "the default VPC") || vmID(d) != "i-new" {
		t.Errorf("without a draining VM:\n%s", b.String())
	}
}
