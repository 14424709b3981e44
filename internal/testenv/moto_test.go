package testenv

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/anycloud/anycloud/internal/cloudemu"
)

func TestMotoAnswersTheAWSCLI(t *testing.T) {
	t.Parallel()
	endpoint := StartMoto(t)
	if !strings.HasPrefix(endpoint, "http://127.0.0.1:") {
		t.Fatalf("endpoint %q is not on 127.0.0.1", endpoint)
	}
	var regions struct {
		Regions []struct{ RegionName string }
	}
	out := AWSCLI(t, endpoint, "ec2", "describe-regions", "--output", "json")
	if err := json.Unmarshal([]byte(out), &regions); err != nil {
		t.Fatalf("describe-regions output: %v\n%s", err, out)
	}
	found := false
	for _, r := range regions.Regions {
		found = found || r.RegionName == "us-east-1"
	}
	if !found {
		t.Errorf("describe-regions does not list us-east-1:\n%s", out)
	}

	var instances struct{ Reservations []json.RawMessage }
	out = AWSCLI(t, endpoint, "ec2", "describe-instances", "--output", "json")
	if err := json.Unmarshal([]byte(out), &instances); err != nil {
		t.Fatalf("describe-instances output: %v\n%s", err, out)
	}
	if len(instances.Reservations) != 0 {
		t.Errorf("a fresh moto has %d reservations, want 0", len(instances.Reservations))
	}
}

func TestMotoServersAreSeparate(t *testing.T) {
	t.Parallel()
	a, b := StartMoto(t), StartMoto(t)
	if a == b {
		t.Fatalf("two StartMoto calls share %s", a)
	}
	AWSCLI(t, a, "ec2", "run-instances", "--image-id", "ami-760aaa0f", "--instance-type", "t3.micro")
	count := func(endpoint string) string {
		return strings.TrimSpace(AWSCLI(t, endpoint, "ec2", "describe-instances",
			"--query", "length(Reservations[].Instances[])", "--output", "text"))
	}
	if got := count(a); got != "1" {
		t.Errorf("instances in the first moto: %s, want 1", got)
	}
	if got := count(b); got != "0" {
		t.Errorf("instances in the second moto: %s, want 0", got)
	}
}

func TestTail(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"a", "a"},
		{"a\nb\nc\n", "b\nc"},
		{"b\nc", "b\nc"},
	} {
		if got := string(cloudemu.Tail([]byte(tc.in), 2)); got != tc.want {
			t.Errorf("tail(%q, 2) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// fatalRecorder is a testing.TB whose Fatalf and Skipf record the message
// and stop the goroutine, as the real ones do, without ending the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) {
	r.msg = "fatal: " + fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *fatalRecorder) Skipf(format string, args ...any) {
	r.msg = "skip: " + fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *fatalRecorder) run(f func(testing.TB)) string {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f(r)
	}()
	<-done
	return r.msg
}

func TestStartMotoShowsTheOutputOfAMotoThatDies(t *testing.T) {
	bin := t.TempDir()
	script := "#!/bin/sh\necho 'Address already in use: something broke' >&2\nexit 3\n"
	if err := os.WriteFile(filepath.Join(bin, "moto_server"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin)
	t.Setenv("CI", "")
	got := (&fatalRecorder{TB: t}).run(func(tb testing.TB) { StartMoto(tb) })
	if !strings.HasPrefix(got, "fatal: moto_server exited") || !strings.Contains(got, "something broke") {
		t.Errorf("StartMoto of a dying moto_server said %q; want a failure with its output", got)
	}
}

func TestStartMotoWithoutMotoIsMissing(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	t.Setenv("CI", "")
	got := (&fatalRecorder{TB: t}).run(func(tb testing.TB) { StartMoto(tb) })
	if !strings.HasPrefix(got, "skip: ") || !strings.Contains(got, "moto_server") {
		t.Errorf("StartMoto without moto_server said %q; want a skip naming it", got)
	}
}
