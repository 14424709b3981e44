package cli

// End-to-end tests of GitHub sign-in on emulated VMs: a control plane on
// the cloud emulator (moto, one real cloud-init VM container per
// instance), a private registry (distribution, built from source) holding
// the workload's image, and a fake GitHub whose host also serves a real
// git server (git-http-backend) with a private repository. The VMs reach
// the fake GitHub on this machine's address on the Docker bridge; the
// registry is reached by the engine, on 127.0.0.1.

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/moby/moby/client"

	"github.com/anycloud/anycloud/internal/cloudemu"
	"github.com/anycloud/anycloud/internal/controlplane"
	"github.com/anycloud/anycloud/internal/github/githubtest"
	"github.com/anycloud/anycloud/internal/testenv"
	"github.com/anycloud/anycloud/manifests"
	awsprovider "github.com/anycloud/anycloud/provider/aws"
)

// tokenForms are the token and its common encodings: what a leak would
// look like.
func tokenForms() [][]byte {
	return [][]byte{[]byte(tokenCanary), []byte(base64.StdEncoding.EncodeToString([]byte(tokenCanary))), []byte(base64.RawURLEncoding.EncodeToString([]byte(tokenCanary))), []byte(hex.EncodeToString([]byte(tokenCanary)))}
}

func hasToken(b []byte) bool {
	for _, f := range tokenForms() {
		if bytes.Contains(b, f) {
			return true
		}
	}
	return false
}

// processes is every command line on this machine, which sees the
// processes of every container, emulated VMs included.
func processes() string {
	var b strings.Builder
	files, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range files {
		if c, err := os.ReadFile(f); err == nil {
			b.Write(bytes.ReplaceAll(c, []byte{0}, []byte{' '}))
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// vmDiskHasToken reports the files of the VM container's own filesystem
// (its disk: docker export leaves out tmpfs mounts such as /run) that hold
// the token.
func vmDiskHasToken(t *testing.T, docker *client.Client, ctr string) []string {
	t.Helper()
	return exportHolds(t, docker, ctr, hasToken)
}

// fileOf reads a file of a container.
func fileOf(t *testing.T, docker *client.Client, ctr, path string) string {
	t.Helper()
	res, err := docker.CopyFromContainer(context.Background(), ctr, client.CopyFromContainerOptions{SourcePath: path})
	if err != nil {
		t.Fatalf("copy %s from %s: %v", path, ctr, err)
	}
	defer res.Content.Close()
	tr := tar.NewReader(res.Content)
	if _, err := tr.Next(); err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(tr)
	return string(b)
}

func TestSourceAndPrivateImageOnEmulatedVMsWithRecoveryAndNoTokenLeak(t *testing.T) {
	cloud := testenv.StartCloud(t, testenv.CloudOptions{Quiet: true})
	demo := testenv.RequireDemoImage(t)
	docker := testenv.RequireDocker(t)
	registry := testenv.StartRegistry(t, "octocat", tokenCanary)
	private := registry.Push(t, demo, "me/private:v1")

	// The emulated VMs share this machine's network: the fake GitHub and
	// its git server are reached on loopback, as everything in tests is.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gh := githubtest.NewServerOn(t, tokenCanary, l)
	git := testenv.NewGitServer(t, tokenCanary)
	commits := git.CreateRepo(t, "me/train",
		map[string]string{"train.py": "print('first')\n"},
		map[string]string{"train.py": "print('second')\n"})
	var (
		mu        sync.Mutex
		psInFetch []string
	)
	git.Hold = func(r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/git-upload-pack") {
			mu.Lock()
			psInFetch = append(psInFetch, processes())
			mu.Unlock()
		}
	}
	gh.Mux.Handle("/me/", git)

	e := newEnvWith(t, func(c *controlplane.Config) {
		c.Resync = time.Second
		c.TuneAWS = func(o *awsprovider.Options) {
			o.Retry = awsprovider.RetryPolicy{Initial: 20 * time.Millisecond, Max: 200 * time.Millisecond, MaxElapsed: 3 * time.Second}
		}
	})
	var outputs []string
	must := func(stdin string, args ...string) result {
		t.Helper()
		r := e.runIn(stdin, args...)
		outputs = append(outputs, r.String())
		if r.err != nil {
			t.Fatalf("%s\n%v", r, r.err)
		}
		return r
	}
	e.vars["AWS_SECRET_ACCESS_KEY"] = "testing"
	must("", "credentials", "new", "emu", "--provider", "aws", "--region", "us-east-1", "--endpoint-url", cloud.Endpoint, "--access-key-id", "testing")
	delete(e.vars, "AWS_SECRET_ACCESS_KEY")
	e.vars[envGitHubURL], e.vars[envGitHubAPIURL] = gh.URL, gh.URL
	must(tokenCanary+"\n", "login", "--with-token", "--registry", registry.Host)
	must("", "auth", "status")

	// train: the private image and the private repository at its first
	// commit, with the token exposed (the default). lint: a public image
	// (no registry login) with the token kept from the container.
	dir := t.TempDir()
	writeFile(t, dir, "deploy.yaml", `apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: train}
spec:
  image: `+private+`
  credentials: emu
  vmType: t3.micro
  source: {git: `+gh.URL+`/me/train.git, commit: `+commits[0]+`}
---
apiVersion: anycloud.dev/v1
kind: Deployment
metadata: {name: lint}
spec:
  image: `+demo+`
  credentials: emu
  vmType: t3.micro
  source: {git: `+gh.URL+`/me/train.git, commit: `+commits[1]+`, path: /src, exposeToken: false}
`)
	must("", "apply", "-f", dir)

	ready := func(name, notVM string) *manifests.Deployment {
		t.Helper()
		var d *manifests.Deployment
		deadline := time.Now().Add(4 * time.Minute)
		for {
			var err error
			d, err = getDeployment(e, name)
			if err == nil && d.Status.VM != nil && d.Status.VM.ID != notVM && d.Status.VM.Bootstrapped {
				if c := manifests.FindCondition(d.Status.Conditions, manifests.ConditionReady); c != nil && c.Status == manifests.ConditionTrue {
					return d
				}
			}
			if time.Now().After(deadline) {
				r := e.run("describe", "deployment", name)
				t.Fatalf("%s not Ready with a new VM within 4m:\n%s\ncontrol plane log:\n%s", name, r.stdout, tail(e.log.String(), 40))
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
	train, lint := ready("train", ""), ready("lint", "")

	inspect := func(name string) client.ContainerInspectResult {
		t.Helper()
		in, err := docker.ContainerInspect(context.Background(), "anycloud-"+name, client.ContainerInspectOptions{})
		if err != nil {
			t.Fatalf("workload of %s: %v", name, err)
		}
		return in
	}
	envOf := func(in client.ContainerInspectResult) map[string]string {
		env := map[string]string{}
		for _, kv := range in.Container.Config.Env {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = v
		}
		return env
	}
	in := inspect("train")
	if in.Container.Config.Image != private || in.Container.Config.Labels[cloudemu.LabelInstance] != train.Status.VM.ID {
		t.Errorf("train runs %s on %s, want %s on its VM %s", in.Container.Config.Image, in.Container.Config.Labels[cloudemu.LabelInstance], private, train.Status.VM.ID)
	}
	if envOf(in)["GITHUB_TOKEN"] != tokenCanary {
		t.Error("train's container lacks GITHUB_TOKEN")
	}
	if in.Container.Config.WorkingDir != "/workspace" || !strings.Contains(fileOf(t, docker, "anycloud-train", "/workspace/train.py"), "first") {
		t.Errorf("train's /workspace is not the first commit (working dir %q)", in.Container.Config.WorkingDir)
	}
	in = inspect("lint")
	if _, ok := envOf(in)["GITHUB_TOKEN"]; ok {
		t.Error("lint's container has GITHUB_TOKEN despite exposeToken: false")
	}
	if in.Container.Config.WorkingDir != "/src" || !strings.Contains(fileOf(t, docker, "anycloud-lint", "/src/train.py"), "second") {
		t.Errorf("lint's /src is not the second commit (working dir %q)", in.Container.Config.WorkingDir)
	}
	pulls := func() int { return len(manifestPulled.FindAllString(registry.Log(), -1)) }
	if pulls() < 1 {
		t.Error("the registry served no pull of the private image")
	}

	// Recovery: train's VM is taken away; the new one pulls and clones
	// the same commit again.
	fetches := len(git.Requests())
	outside := ec2Outside(t, cloud.Moto)
	if _, err := outside.TerminateInstances(context.Background(), &ec2.TerminateInstancesInput{InstanceIds: []string{train.Status.VM.ID}}); err != nil {
		t.Fatal(err)
	}
	recovered := ready("train", train.Status.VM.ID)
	if recovered.Status.Recoveries < 1 {
		t.Errorf("recoveries %d", recovered.Status.Recoveries)
	}
	if !strings.Contains(fileOf(t, docker, "anycloud-train", "/workspace/train.py"), "first") {
		t.Error("the recovered VM's /workspace is not the first commit")
	}
	if len(git.Requests()) <= fetches {
		t.Error("the recovered VM did not clone again")
	}
	if pulls() < 2 {
		t.Error("the recovered VM did not pull the private image again")
	}

	// Where the token must never be.
	mu.Lock()
	seen := append([]string(nil), psInFetch...)
	mu.Unlock()
	if len(seen) < 3 {
		t.Errorf("%d fetches seen in flight, want one per VM (3)", len(seen))
	}
	for _, ps := range seen {
		if !strings.Contains(ps, "git") {
			t.Errorf("no git process during a fetch:\n%s", ps)
		}
		if hasToken([]byte(ps)) {
			t.Errorf("the token is in a command line during a fetch:\n%s", ps)
		}
	}
	for _, d := range []*manifests.Deployment{recovered, lint} {
		ctr := cloud.VMs.Container(d.Status.VM.ID)
		if files := vmDiskHasToken(t, docker, ctr); len(files) > 0 {
			t.Errorf("the token is on VM %s's disk: %v", d.Status.VM.ID, files)
		}
		out, err := exec.Command("docker", "exec", ctr, "ls", "-A", "/run/anycloud").CombinedOutput()
		if err == nil && strings.TrimSpace(string(out)) != "" {
			t.Errorf("left in VM %s's /run/anycloud: %s", d.Status.VM.ID, out)
		}
		ud, err := outside.DescribeInstanceAttribute(context.Background(), &ec2.DescribeInstanceAttributeInput{InstanceId: sdkaws.String(d.Status.VM.ID), Attribute: types.InstanceAttributeNameUserData})
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := base64.StdEncoding.DecodeString(sdkaws.ToString(ud.UserData.Value))
		if len(raw) == 0 || hasToken(raw) {
			t.Errorf("user-data of %s is empty or holds the token", d.Status.VM.ID)
		}
	}
	for _, args := range [][]string{
		{"get", "deploy", "-o", "json"}, {"get", "deploy", "train", "-o", "yaml"}, {"describe", "deployment", "train"},
		{"describe", "deployment", "lint"}, {"status"}, {"status", "-o", "json"}, {"logs", "train"}, {"auth", "status", "-o", "json"},
	} {
		must("", args...)
	}
	for _, o := range outputs {
		if hasToken([]byte(o)) {
			t.Errorf("the token is in CLI output:\n%s", o)
		}
	}
	if hasToken([]byte(e.log.String())) {
		t.Error("the token is in the control plane's log")
	}
	filepath.WalkDir(e.home, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			if b, _ := os.ReadFile(p); hasToken(b) {
				t.Errorf("the token is in %s", p)
			}
		}
		return nil
	})
}

// manifestPulled is the registry's access log line of an authorised pull
// of the image's manifest (the engine asks with HEAD when it has the
// layers already).
var manifestPulled = regexp.MustCompile(`"(GET|HEAD) /v2/me/private/manifests/v1 HTTP/1.1" 200`)

func ec2Outside(t *testing.T, endpoint string) *ec2.Client {
	t.Helper()
	c, _, err := awsprovider.NewClient(context.Background(), awsprovider.ClientConfig{
		Region: "us-east-1", AccessKeyID: "testing", SecretAccessKey: "testing", EndpointURL: endpoint,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}
