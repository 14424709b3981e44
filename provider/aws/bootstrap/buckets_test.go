package bootstrap

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func testBuckets() []Bucket {
	return []Bucket{
		{Bucket: "data", Prefix: "imagenet", Path: "/data", Region: "us-east-1"},
		{Bucket: "out", Prefix: "run 1/", Path: "/out", ReadWrite: true, Interval: 30 * time.Second, Region: "us-east-1", Endpoint: "http://127.0.0.1:5000"},
		{Bucket: "theirs", Path: "/theirs", Region: "us-west-2", Session: &Session{AccessKeyID: "ASIAEXAMPLE", SecretAccessKey: "c2VjcmV0/+=", SessionToken: "dG9rZW4="}},
	}
}

func TestSyncScriptIsValidShellAndHoldsNoKey(t *testing.T) {
	script := syncScript("anycloud-train", testBuckets())
	f := filepath.Join(t.TempDir(), "sync")
	if err := os.WriteFile(f, []byte(script), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("sh", "-n", f).CombinedOutput(); err != nil {
		t.Fatalf("sh -n: %v\n%s\n%s", err, out, script)
	}
	for _, want := range []string{
		"RCLONE_CONFIG_B0_PROVIDER=AWS", "RCLONE_CONFIG_B0_ENV_AUTH=true",
		"RCLONE_CONFIG_B1_PROVIDER=Other", "RCLONE_CONFIG_B1_ENDPOINT=http://127.0.0.1:5000", "RCLONE_CONFIG_B1_FORCE_PATH_STYLE=true",
		"RCLONE_CONFIG_B2_ENV_AUTH=false", "RCLONE_CONFIG_B2_REGION=us-west-2",
		"one 0 sync b0:data/imagenet /var/lib/anycloud/buckets/anycloud-train/0",
		"one 1 copy 'b1:out/run 1' /var/lib/anycloud/buckets/anycloud-train/1",
		"one 1 sync /var/lib/anycloud/buckets/anycloud-train/1 'b1:out/run 1'",
		"while sleep 30;", "unset AWS_CA_BUNDLE",
	} {
		if !strings.Contains(script, want) {
			t.Errorf("the script lacks %q:\n%s", want, script)
		}
	}
	if strings.Contains(script, "c2VjcmV0") || strings.Contains(script, "dG9rZW4") || strings.Contains(script, "ASIAEXAMPLE") {
		t.Errorf("the script holds the session credentials:\n%s", script)
	}
	if strings.Count(script, "while sleep") != 1 {
		t.Errorf("a read-only bucket is copied back:\n%s", script)
	}
}

func TestCheckBucketRefusesWhatCouldBreakTheScript(t *testing.T) {
	for _, b := range []Bucket{
		{Bucket: "Bad_Name", Path: "/d"},
		{Bucket: "data", Prefix: "a'b", Path: "/d"},
		{Bucket: "data", Path: "relative"},
		{Bucket: "data", Path: "/d:/etc"},
		{Bucket: "data", Path: "/d", Region: "us east"},
		{Bucket: "data", Path: "/d", Endpoint: "http://x/$(id)"},
		{Bucket: "data", Path: "/d", Session: &Session{AccessKeyID: "A", SecretAccessKey: "x\ny=1", SessionToken: "t"}},
	} {
		if err := checkBucket(b); err == nil {
			t.Errorf("%+v accepted", b)
		}
	}
	for _, b := range testBuckets() {
		if err := checkBucket(b); err != nil {
			t.Errorf("%+v: %v", b, err)
		}
	}
}

func TestSyncStatusReadsEachBucketsLastSync(t *testing.T) {
	_, _, c := setup(t)
	name := "anycloud-status-" + randomHex(t, 4)
	dir := runDir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Skipf("cannot make %s here: %v", dir, err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.WriteFile(filepath.Join(dir, "bucket-0.status"), []byte("0 ok 1796312000\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bucket-1.status"), []byte("1 failed 1796312001 2026/12/03 Failed to sync: AccessDenied \n"), 0o644)
	os.WriteFile(filepath.Join(dir, "bucket-1.env"), []byte("RCLONE_CONFIG_B1_SECRET_ACCESS_KEY=x\n"), 0o600)
	got, err := SyncStatus(context.Background(), c, name)
	if err != nil {
		t.Fatal(err)
	}
	want := []SyncResult{
		{Index: 0, At: time.Unix(1796312000, 0).UTC(), OK: true},
		{Index: 1, At: time.Unix(1796312001, 0).UTC(), Message: "2026/12/03 Failed to sync: AccessDenied"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got, err := SyncStatus(context.Background(), c, "anycloud-none-"+randomHex(t, 4)); err != nil || len(got) != 0 {
		t.Errorf("no buckets: %v, %v", got, err)
	}
}
