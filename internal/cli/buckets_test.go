package cli

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
)

// The access keys of the two credentials of the bucket test: whatever
// the VM holds, these must not be in it.
const (
	ownKeyID      = "AKIAOWNCANARY7F3E9A1B"
	ownSecret     = "OwnSecretCANARY9f8e7d6c5b4a39281716"
	partnerKeyID  = "AKIAPARTNERCANARY5C4D"
	partnerSecret = "PartnerSecretCANARY2b3c4d5e6f7a8b9c"
)

// s3Client is an outside observer of moto's S3.
func s3Client(endpoint string) *s3.Client {
	return s3.New(s3.Options{
		Region: "us-east-1", BaseEndpoint: sdkaws.String(endpoint), UsePathStyle: true,
		Credentials: credentials.NewStaticCredentialsProvider("testing", "testing", ""),
	})
}

func putObject(t *testing.T, c *s3.Client, bucket, key, body string) {
	t.Helper()
	if _, err := c.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: strings.NewReader(body)}); err != nil {
		t.Fatalf("put s3://%s/%s: %v", bucket, key, err)
	}
}

// getObject is the object's content, or "" and false when it is absent.
func getObject(c *s3.Client, bucket, key string) (string, bool) {
	out, err := c.GetObject(context.Background(), &s3.GetObjectInput{Bucket: &bucket, Key: &key})
	if err != nil {
		return "", false
	}
	defer out.Body.Close()
	b, _ := io.ReadAll(out.Body)
	return string(b), true
}

// TestAWSBucketsSyncWithTheDeploymentsOwnRoleAndNoKeyOnTheVM is the
// whole bucket chain through the cloud emulator: the deployment's own
// role and instance profile, the VM's rclone reading this account's
// buckets through the instance metadata service (the emulator's, with
// credentials from moto's STS for the profile's role) and another
// account's with minted session credentials in a 0600 root file on
// tmpfs; the data in the workload's container; a file the workload wrote
// reaching its bucket on the sync interval, and, on a bucket whose
// interval is an hour, at an interruption warning (the VM drains while
// its replacement starts) and when the deployment is deleted;
// the role and profile gone after the instance; and neither account's
// access keys anywhere on the VM or in its user-data.
func TestAWSBucketsSyncWithTheDeploymentsOwnRoleAndNoKeyOnTheVM(t *testing.T) {
	a := newAWSEnv(t)
	name := a.name("buckets")
	ctr := "anycloud-" + name
	// Credentials of their own, whose keys can be looked for. Each scope
	// sweeps the VMs of this cluster that no deployment owns there, and
	// moto has one account: the partner's are in another region, and
	// the rig's own credentials go.
	a.must("credentials", "delete", "moto")
	// Its interruption queue and rules go with it; those of "own" (one
	// account and region: the same names) are made afresh after that.
	queue := "anycloud-" + a.clusterID()
	queues := func() string {
		return testenv.AWSCLI(t, a.moto, "sqs", "list-queues", "--queue-name-prefix", queue, "--output", "text")
	}
	a.eventually("the rig's interruption queue removed", func() bool { return !strings.Contains(queues(), queue) })
	for _, c := range []struct{ name, region, key, secret string }{{"own", "us-east-1", ownKeyID, ownSecret}, {"partner", "us-west-2", partnerKeyID, partnerSecret}} {
		a.vars["AWS_SECRET_ACCESS_KEY"] = c.secret
		a.must("credentials", "new", c.name, "--provider", "aws", "--region", c.region, "--endpoint-url", a.cloud.Endpoint, "--access-key-id", c.key)
		delete(a.vars, "AWS_SECRET_ACCESS_KEY")
	}
	s3c := s3Client(a.moto)
	for _, b := range []string{"data", "out", "theirs"} {
		if _, err := s3c.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: sdkaws.String(b)}); err != nil {
			t.Fatal(err)
		}
	}
	hello := "hello from the bucket " + a.suffix
	putObject(t, s3c, "data", "imagenet/hello.txt", hello)
	putObject(t, s3c, "data", "elsewhere/not-mine.txt", "not this prefix")
	putObject(t, s3c, "theirs", "shared/theirs.txt", "from the other account")

	dir := t.TempDir()
	writeFile(t, dir, "d.yaml", fmt.Sprintf(`apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: %s}
spec:
  image: %s
  credentials: own
  vmType: t3.micro
  env: {DEMO_COPY: "/data/hello.txt:/out/copy.txt,/data/hello.txt:/final/copy.txt"}
  buckets:
  - {uri: s3://data/imagenet, path: /data}
  - {uri: s3://out/run1, path: /out, mode: readWrite, syncInterval: 10s}
  - {uri: s3://out/final, path: /final, mode: readWrite, syncInterval: 1h}
  - {uri: s3://theirs/shared, path: /theirs, credentials: partner}
`, name, a.image))
	a.must("apply", "-f", dir, "--wait", "--timeout", "3m")
	d := a.ready(name)

	role := awsprovider.RoleName(d.Metadata.UID)
	if iam := d.Status.IAM; iam == nil || iam.Role != role || !iam.Managed || !strings.HasSuffix(iam.InstanceProfile, "/"+role) {
		t.Errorf("status.iam = %+v", d.Status.IAM)
	}
	if len(d.Status.Buckets) != 4 {
		t.Fatalf("status.buckets = %+v", d.Status.Buckets)
	}
	for _, b := range d.Status.Buckets {
		if b.Result != manifests.SyncOK || b.LastSync.IsZero() {
			t.Errorf("bucket %s: %+v", b.URI, b)
		}
	}
	if exp := d.Status.Buckets[3].CredentialsExpireAt; exp == nil || exp.Sub(d.Status.VM.LaunchedAt).Hours() < 35 {
		t.Errorf("the other account's credentials expire at %v", exp)
	}
	desc := a.must("describe", "deploy", name).stdout
	for _, want := range []string{role, d.Status.IAM.InstanceProfile, "s3://out/run1", "/final", "ok"} {
		if !strings.Contains(desc, want) {
			t.Errorf("describe does not show %q:\n%s", want, desc)
		}
	}

	// The buckets are in the workload's container; only the prefix.
	if got := fileOf(t, a.docker, ctr, "/data/hello.txt"); got != hello {
		t.Errorf("/data/hello.txt in the container = %q", got)
	}
	if got := fileOf(t, a.docker, ctr, "/theirs/theirs.txt"); got != "from the other account" {
		t.Errorf("/theirs/theirs.txt in the container = %q", got)
	}
	if _, err := a.docker.ContainerStatPath(context.Background(), ctr, client.ContainerStatPathOptions{Path: "/data/not-mine.txt"}); err == nil {
		t.Error("another prefix of the bucket was synced")
	}
	// The workload's file reaches its bucket on the 10s interval; the
	// hourly one's does not, yet.
	a.eventually("the workload's file in s3://out/run1", func() bool {
		got, ok := getObject(s3c, "out", "run1/copy.txt")
		return ok && got == hello
	})
	if _, ok := getObject(s3c, "out", "final/copy.txt"); ok {
		t.Error("the hourly bucket was copied back already")
	}
	// status.buckets follows the copies back, not only the first sync.
	bootSync := d.Status.Buckets[1].LastSync
	a.eventually("status.buckets showing a later copy back of s3://out/run1", func() bool {
		b := a.ready(name).Status.Buckets
		return len(b) == 4 && b[1].LastSync.After(bootSync) && b[1].Result == manifests.SyncOK
	})

	// EC2 warns that it takes the VM back: the VM copies the hourly
	// bucket back while its replacement starts.
	first := d.Status.VM.ID
	a.eventually("the interruption queue and rules made again", func() bool {
		rules := testenv.AWSCLI(t, a.moto, "events", "list-rules", "--name-prefix", queue, "--query", "Rules[].Name", "--output", "text")
		return strings.Contains(queues(), queue) && len(strings.Fields(rules)) == 4
	})
	received := a.proxy.Count("ReceiveMessage")
	a.eventually("the interruption queue consumed", func() bool { return a.proxy.Count("ReceiveMessage") > received })
	a.putEvent("EC2 Spot Instance Interruption Warning", "aws.ec2", map[string]any{"instance-id": first, "instance-action": "terminate"})
	a.eventually("the hourly bucket copied back at the warning", func() bool {
		got, ok := getObject(s3c, "out", "final/copy.txt")
		return ok && got == hello
	})
	a.eventually("the replacement Ready", func() bool {
		d = a.ready(name)
		return d.Status.VM.ID != first && d.Status.Draining == nil && d.Status.VM.Bootstrapped
	})
	if !strings.Contains(a.must("describe", "deploy", name).stdout, "copied the read-write buckets of VM "+first+" back at the interruption warning") {
		t.Error("no event of the copy at the warning")
	}
	if d.Status.IAM == nil || d.Status.IAM.Role != role {
		t.Errorf("the replacement's role: %+v", d.Status.IAM)
	}
	if got := fileOf(t, a.docker, ctr, "/data/hello.txt"); got != hello {
		t.Errorf("/data/hello.txt in the replacement's container = %q", got)
	}

	// The other account's session credentials: 0600 root on tmpfs.
	envFile := "/run/anycloud/" + ctr + "/bucket-3.env"
	if r := a.run("ssh", name, "--", "sudo", "stat", "-f", "-c", "%T", envFile, ";", "sudo", "stat", "-c", "%a:%U", envFile); r.err != nil ||
		len(strings.Fields(r.stdout)) != 2 || strings.Fields(r.stdout)[0] != "tmpfs" || strings.Fields(r.stdout)[1] != "600:root" {
		t.Errorf("session credentials file: %q, err %v\n%s", r.stdout, r.err, r.stderr)
	}
	if r := a.run("ssh", name, "--", "sudo", "grep", "-c", "SESSION_TOKEN", envFile); r.err != nil || strings.TrimSpace(r.stdout) != "1" {
		t.Errorf("the session credentials file holds no session token: %q %v", r.stdout, r.err)
	}

	// The minted session credentials are on the VM only: not in the
	// control plane's log, its store, or anything it shows.
	r := a.run("ssh", name, "--", "sudo", "cat", envFile)
	var minted []string
	for _, line := range strings.Split(r.stdout, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "RCLONE_CONFIG_B3_") && len(v) >= 16 {
			minted = append(minted, v)
		}
	}
	if len(minted) != 3 {
		t.Fatalf("session credentials on the VM: %d values", len(minted))
	}
	db, err := os.ReadFile(filepath.Join(a.home, "state.db"))
	if err != nil {
		t.Fatal(err)
	}
	shown := a.must("describe", "deploy", name).stdout + a.must("get", "deploy", name, "-o", "json").stdout + a.must("status").stdout
	for what, text := range map[string]string{"log": a.log.String(), "store": string(db), "output": shown} {
		if containsAny(text, minted) {
			t.Errorf("the control plane's %s holds the minted session credentials", what)
		}
	}

	// Neither account's keys are anywhere on the VM: its disk, its tmpfs,
	// the bucket copies, the user-data.
	needles := []string{ownKeyID, ownSecret, partnerKeyID, partnerSecret}
	vm := a.cloud.VMs.Container(d.Status.VM.ID)
	holdsANeedle := func(b []byte) bool {
		for _, n := range needles {
			if bytes.Contains(b, []byte(n)) {
				return true
			}
		}
		return false
	}
	if found := exportHolds(t, a.docker, vm, holdsANeedle); len(found) > 0 {
		t.Errorf("the VM's disk holds the control plane's keys in %v", found)
	}
	for _, path := range []string{"/run", "/var/lib/anycloud", "/etc"} {
		r := a.run("ssh", name, "--", "sudo", "grep", "-rlF", "-e", ownKeyID, "-e", ownSecret, "-e", partnerKeyID, "-e", partnerSecret, path)
		if strings.TrimSpace(r.stdout) != "" {
			t.Errorf("the VM's %s holds the control plane's keys: %s", path, r.stdout)
		}
	}
	if ud := a.userData(d.Status.VM.ID); containsAny(ud, needles) || strings.Contains(ud, "SESSION_TOKEN") {
		t.Errorf("user-data holds credentials:\n%s", ud)
	}
	if a.proxy.Seen(ownSecret) || a.proxy.Seen(partnerSecret) {
		t.Error("a secret access key was sent in a request body")
	}
	if containsAny(a.log.String(), []string{ownSecret, partnerSecret}) {
		t.Error("the control plane's log holds a secret access key")
	}
	if out := a.must("get", "deploy", name, "-o", "json").stdout; containsAny(out, needles) {
		t.Error("the deployment's JSON holds an access key")
	}

	// Delete: a file the workload has just written to the hourly bucket
	// is copied back before the VM ends; then the role and the profile go.
	var late bytes.Buffer
	tw := tar.NewWriter(&late)
	tw.WriteHeader(&tar.Header{Name: "late.txt", Mode: 0o644, Size: 4})
	tw.Write([]byte("late"))
	tw.Close()
	if _, err := a.docker.CopyToContainer(context.Background(), ctr, client.CopyToContainerOptions{DestinationPath: "/final", Content: &late}); err != nil {
		t.Fatal(err)
	}
	a.must("delete", "deploy", name, "--wait")
	if got, ok := getObject(s3c, "out", "final/late.txt"); !ok || got != "late" {
		t.Errorf("s3://out/final/late.txt after the delete = %q, %v\ncontrol plane log:\n%s", got, ok, tail(a.log.String(), 40))
	}
	a.eventually("the role and profile removed", func() bool {
		var roles struct{ Roles []any }
		var profs struct{ InstanceProfiles []any }
		json.Unmarshal([]byte(testenv.AWSCLI(t, a.moto, "iam", "list-roles", "--path-prefix", "/anycloud/", "--output", "json")), &roles)
		json.Unmarshal([]byte(testenv.AWSCLI(t, a.moto, "iam", "list-instance-profiles", "--path-prefix", "/anycloud/", "--output", "json")), &profs)
		return len(roles.Roles) == 0 && len(profs.InstanceProfiles) == 0
	})
}

func containsAny(s string, needles []string) bool {
	for _, n := range needles {
		if strings.Contains(s, n) {
			return true
		}
	}
	return false
}

// exportHolds lists the files of a container's own filesystem (docker
// export: its disk, without tmpfs or bind mounts) whose content holds
// says yes to.
func exportHolds(t *testing.T, docker *client.Client, ctr string, holds func([]byte) bool) []string {
	t.Helper()
	rc, err := docker.ContainerExport(context.Background(), ctr, client.ContainerExportOptions{})
	if err != nil {
		t.Fatalf("export %s: %v", ctr, err)
	}
	defer rc.Close()
	var found []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read the export of %s: %v", ctr, err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if holds(b) {
			found = append(found, h.Name)
		}
	}
	return found
}
