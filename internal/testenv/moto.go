package testenv

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anycloud/anycloud/internal/cloudemu"
)

// StartMoto starts a moto_server of its own for t on a free port of
// 127.0.0.1, waits until it answers HTTP and returns its endpoint,
// "http://127.0.0.1:PORT". The server, and everything it started, is
// killed when t ends. Without moto_server on PATH, t is Missing.
func StartMoto(t testing.TB) string {
	t.Helper()
	m, err := cloudemu.StartMoto(context.Background(), filepath.Join(t.TempDir(), "moto.log"), 0)
	if errors.Is(err, cloudemu.ErrNoMoto) {
		Missing(t, err.Error())
	}
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(m.Stop)
	return m.Endpoint
}

// AWSEnv is the environment of an AWS CLI or SDK acting on the moto at
// endpoint from outside: moto's test credentials, us-east-1, no instance
// metadata lookups and no pager. AWSCLI adds it to a clean environment;
// callers running aws themselves should drop their own AWS_* variables
// first, or a profile of the developer's could win.
func AWSEnv(endpoint string) []string {
	return []string{
		"AWS_ACCESS_KEY_ID=testing",
		"AWS_SECRET_ACCESS_KEY=testing",
		"AWS_DEFAULT_REGION=us-east-1",
		"AWS_REGION=us-east-1",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_ENDPOINT_URL=" + endpoint,
		"AWS_PAGER=",
		"AWS_CONFIG_FILE=" + os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
	}
}

// AWSCLI runs "aws --endpoint-url endpoint args..." with AWSEnv and
// returns its standard output. A non-zero exit fails t with the
// command's standard error. Without aws on PATH, t is Missing.
func AWSCLI(t testing.TB, endpoint string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("aws")
	if err != nil {
		Missing(t, "aws (the AWS CLI) not on PATH")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--endpoint-url", endpoint}, args...)...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	cmd.Env = append(env, AWSEnv(endpoint)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("aws %s: %v\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return stdout.String()
}
