package testenv

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// motoStartTimeout bounds how long StartMoto waits for moto_server to
// answer HTTP.
const motoStartTimeout = 20 * time.Second

// motoListening is the line werkzeug prints once moto_server listens; with
// -p0 it is the only place the kernel-chosen port appears.
var motoListening = regexp.MustCompile(`Running on (http://127\.0\.0\.1:[0-9]+)`)

// StartMoto starts a moto_server of its own for t on a free port of
// 127.0.0.1, waits until it answers HTTP and returns its endpoint,
// "http://127.0.0.1:PORT". The server, and everything it started, is
// killed when t ends. Without moto_server on PATH, t is Missing.
func StartMoto(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("moto_server")
	if err != nil {
		Missing(t, "moto_server not on PATH (pip install 'moto[server]')")
	}
	logPath := filepath.Join(t.TempDir(), "moto.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	// -p0: the kernel picks the port and moto reports it, so no other
	// process can take it between our choosing and moto's binding.
	cmd := exec.Command(bin, "-H", "127.0.0.1", "-p", "0")
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	cmd.Env = append(os.Environ(), "PYTHONUNBUFFERED=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start moto_server: %v", err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		// The negative pid is the process group: moto_server and
		// anything a wrapper (a pyenv shim) put in between.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
	})

	failf := func(format string, args ...any) {
		t.Helper()
		log, _ := os.ReadFile(logPath)
		t.Fatalf(format+"\nmoto_server output (tail):\n%s", append(args, tail(log, 40))...)
	}
	deadline := time.Now().Add(motoStartTimeout)
	var endpoint string
	for {
		log, _ := os.ReadFile(logPath)
		if m := motoListening.FindSubmatch(log); m != nil {
			endpoint = string(m[1])
			break
		}
		select {
		case <-exited:
			failf("moto_server exited before listening: %v", cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			failf("moto_server did not listen within %s", motoStartTimeout)
		}
	}
	client := &http.Client{Timeout: time.Second}
	for {
		// Any HTTP answer will do: the server is up.
		res, err := client.Get(endpoint + "/moto-api/")
		if err == nil {
			res.Body.Close()
			return endpoint
		}
		select {
		case <-exited:
			failf("moto_server exited before answering: %v", cmd.ProcessState)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			failf("moto_server at %s did not answer within %s: %v", endpoint, motoStartTimeout, err)
		}
	}
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

// tail is the last n lines of b.
func tail(b []byte, n int) []byte {
	b = bytes.TrimRight(b, "\n")
	for i := len(b) - 1; i >= 0; i-- {
		if b[i] == '\n' {
			n--
			if n == 0 {
				return b[i+1:]
			}
		}
	}
	return b
}
