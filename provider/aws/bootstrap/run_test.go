package bootstrap

import (
	"bytes"
	"context"
	"errors"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/ssh"

	"github.com/anycloud/anycloud/internal/testenv"
)

// demo is a workload of the demo image under a unique container name, with
// secret values to look out for, and a private sshd to run it through.
type demo struct {
	keys    *Keys
	sshd    *sshdServer
	ssh     *ssh.Client
	docker  *client.Client
	w       Workload
	secrets []string // values that must never show outside the env file
}

// newDemo makes a demo whose container is removed at the end of the test.
func newDemo(t *testing.T) (*demo, context.Context) {
	t.Helper()
	image := testenv.RequireDemoImage(t)
	docker := testenv.RequireDocker(t)
	k, s, c := setup(t)
	canary := "s3cr3t-canary-" + randomHex(t, 8)
	tricky := `it's "quoted" $HOME $(touch /tmp/pwned) = ; | & ` + "`id`"
	d := &demo{
		keys: k, sshd: s, ssh: c, docker: docker,
		w: Workload{
			Name:    "anycloud-bootstrap-test-" + randomHex(t, 6),
			Image:   image,
			Command: []string{"--flag", "two words", `it's`, "$(touch /tmp/pwned-arg)", ""},
			Env:     map[string]string{"ZED": "last", "HF_TOKEN": canary, "A_TRICKY": tricky, "EMPTY": "", "DEMO_ADDR": "127.0.0.1:0"},
			EnvFile: filepath.Join(t.TempDir(), "secrets.env"),
		},
		secrets: []string{canary, tricky},
	}
	t.Cleanup(func() {
		docker.ContainerRemove(context.Background(), d.w.Name, client.ContainerRemoveOptions{Force: true})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return d, ctx
}

// checkClean fails t if a secret value shows in s.
func (d *demo) checkClean(t *testing.T, what, s string) {
	t.Helper()
	for _, v := range d.secrets {
		if strings.Contains(s, v) {
			t.Errorf("%s contains a secret value: %q", what, s)
		}
	}
	if strings.Contains(s, "s3cr3t-canary") {
		t.Errorf("%s contains the canary: %q", what, s)
	}
}

func TestRunStartsTheWorkloadWithItsEnvFileThroughSSH(t *testing.T) {
	d, ctx := newDemo(t)
	c := d.ssh
	if err := Run(ctx, c, d.w); err != nil {
		d.checkClean(t, "Run's error", err.Error())
		t.Fatalf("run: %v", err)
	}

	// The env file: root's only, sorted KEY=VALUE lines, values verbatim.
	fi, err := os.Stat(d.w.EnvFile)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode() != 0o600 {
		t.Errorf("env file mode %v, want 0600", fi.Mode())
	}
	if uid, gid := fileOwner(fi); uid != 0 || gid != 0 {
		t.Errorf("env file owned by %d:%d, want root", uid, gid)
	}
	want := "A_TRICKY=" + d.w.Env["A_TRICKY"] + "\n" +
		"DEMO_ADDR=127.0.0.1:0\n" +
		"EMPTY=\n" +
		"HF_TOKEN=" + d.w.Env["HF_TOKEN"] + "\n" +
		"ZED=last\n"
	if diff := cmp.Diff(want, readFile(t, d.w.EnvFile)); diff != "" {
		t.Errorf("env file (-want +got):\n%s", diff)
	}
	if entries, _ := os.ReadDir(filepath.Dir(d.w.EnvFile)); len(entries) != 1 {
		t.Errorf("temporary files left beside the env file: %v", entries)
	}

	// The container runs with exactly those values and arguments.
	first := d.inspect(ctx, t)
	if first.Container.State == nil || !first.Container.State.Running {
		t.Fatalf("container not running: %+v", first.Container.State)
	}
	env := first.Container.Config.Env
	for k, v := range d.w.Env {
		if !slices.Contains(env, k+"="+v) {
			t.Errorf("container env lacks %s", k)
		}
	}
	if diff := cmp.Diff(d.w.Command, first.Container.Args); diff != "" {
		t.Errorf("container args (-want +got):\n%s", diff)
	}
	if p := first.Container.HostConfig.RestartPolicy.Name; p != "unless-stopped" {
		t.Errorf("restart policy %q", p)
	}
	for _, f := range []string{"/tmp/pwned", "/tmp/pwned-arg"} {
		if _, err := os.Stat(f); err == nil {
			os.Remove(f)
			t.Errorf("%s exists: a value or argument reached a shell", f)
		}
	}

	// Logs show the key names, never the values.
	var logs bytes.Buffer
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(logs.String(), "environment keys:") {
		if time.Now().After(deadline) {
			t.Fatalf("no start line in logs: %q", logs.String())
		}
		time.Sleep(50 * time.Millisecond)
		logs.Reset()
		if err := Logs(ctx, c, d.w.Name, false, &logs); err != nil {
			t.Fatalf("logs: %v", err)
		}
	}
	for _, k := range []string{"A_TRICKY", "DEMO_ADDR", "EMPTY", "HF_TOKEN", "ZED"} {
		if !strings.Contains(logs.String(), k) {
			t.Errorf("logs do not list %s: %q", k, logs.String())
		}
	}
	d.checkClean(t, "the logs", logs.String())

	// Following shows what there is, then stops when the context ends,
	// without an error: the test ends it once the start line arrived.
	fctx, fcancel := context.WithTimeout(ctx, 30*time.Second)
	defer fcancel()
	followed := &signalBuffer{want: "environment keys:", seen: fcancel}
	err = Logs(fctx, c, d.w.Name, true, followed)
	if err != nil {
		t.Errorf("logs -f: %v", err)
	}
	if !strings.Contains(followed.String(), "environment keys:") {
		t.Errorf("logs -f ended without the start line: %q (%v)", followed.String(), context.Cause(fctx))
	}
	// ... and so does the remote `docker logs -f`, though the demo is quiet.
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		ps, err := exec.Command("ps", "-eo", "args").Output()
		if err != nil {
			t.Fatalf("ps: %v", err)
		}
		lingering := slices.ContainsFunc(strings.Split(string(ps), "\n"), func(line string) bool {
			return strings.Contains(line, "docker logs") && strings.Contains(line, d.w.Name)
		})
		if !lingering {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("the remote docker logs -f outlived its context:\n%s", ps)
			break
		}
	}

	// Running again replaces the container.
	d.w.Env["ZED"] = "rotated"
	if err := Run(ctx, c, d.w); err != nil {
		t.Fatalf("second run: %v", err)
	}
	second := d.inspect(ctx, t)
	if second.Container.ID == first.Container.ID {
		t.Errorf("second Run kept container %s", first.Container.ID)
	}
	if !slices.Contains(second.Container.Config.Env, "ZED=rotated") {
		t.Errorf("second container lacks the new value")
	}
	if _, err := d.docker.ContainerInspect(ctx, first.Container.ID, client.ContainerInspectOptions{}); err == nil {
		t.Errorf("first container %s still exists", first.Container.ID)
	}

	d.checkClean(t, "the sshd log", d.sshd.Log())
	ud, err := UserData(d.keys, "root")
	if err != nil {
		t.Fatal(err)
	}
	d.checkClean(t, "user-data", string(ud))
}

func (d *demo) inspect(ctx context.Context, t *testing.T) client.ContainerInspectResult {
	t.Helper()
	res, err := d.docker.ContainerInspect(ctx, d.w.Name, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatalf("inspect %s: %v", d.w.Name, err)
	}
	return res
}

func TestRunErrorsNeverContainValues(t *testing.T) {
	d, ctx := newDemo(t)
	c := d.ssh
	for name, tc := range map[string]struct {
		change func(w *Workload)
		want   string
	}{
		"bad image reference": {func(w *Workload) { w.Image = "Not/A:Valid:Reference" }, "docker run"},
		"unwritable env file": {func(w *Workload) { w.EnvFile = "/proc/anycloud/secrets.env" }, "write env file"},
		"newline in a value":  {func(w *Workload) { w.Env["MULTI"] = d.secrets[0] + "\nsecond line" }, "MULTI"},
		"carriage return":     {func(w *Workload) { w.Env["CR"] = d.secrets[0] + "\r" }, "CR"},
		"empty key":           {func(w *Workload) { w.Env[""] = d.secrets[0] }, "not a valid variable name"},
		"key with =":          {func(w *Workload) { w.Env["A=B"] = d.secrets[0] }, `"A=B"`},
		"bad container name":  {func(w *Workload) { w.Name = "no spaces allowed" }, "invalid container name"},
	} {
		t.Run(name, func(t *testing.T) {
			w := d.w
			w.Env = maps.Clone(d.w.Env)
			tc.change(&w)
			err := Run(ctx, c, w)
			if err == nil {
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			d.checkClean(t, "Run's error", err.Error())
		})
	}
	w := d.w
	w.Env = map[string]string{"MULTI": "a\nb"}
	w.EnvFile = filepath.Join(t.TempDir(), "never.env")
	if err := Run(ctx, c, w); !errors.Is(err, ErrInvalidEnv) {
		t.Errorf("newline error %v does not wrap ErrInvalidEnv", err)
	}
	if _, err := os.Stat(w.EnvFile); err == nil {
		t.Errorf("an invalid environment was written")
	}
	d.checkClean(t, "the sshd log", d.sshd.Log())
}

func TestRemoteRunsThroughSudoUnlessRoot(t *testing.T) {
	argv := []string{"docker", "run", "--name", "x", "img", "two words", "it's", "$(id)", ""}
	if got, want := remote(true, argv), `docker run --name x img 'two words' 'it'\''s' '$(id)' ''`; got != want {
		t.Errorf("as root:\n got %s\nwant %s", got, want)
	}
	if got, want := remote(false, argv[:2]), `sudo -n -- docker run`; got != want {
		t.Errorf("as another user:\n got %s\nwant %s", got, want)
	}
}

func fileOwner(fi os.FileInfo) (uid, gid uint32) {
	st := fi.Sys().(*syscall.Stat_t)
	return st.Uid, st.Gid
}

func TestRunArgsGiveTheContainerGPUsOnlyWhenAsked(t *testing.T) {
	w := Workload{Name: "anycloud-train", Image: "ghcr.io/me/train:1", Command: []string{"python", "train.py"}}
	want := []string{"docker", "run", "-d", "--name", "anycloud-train", "--restart", "unless-stopped", "--env-file", "/run/x.env", "ghcr.io/me/train:1", "python", "train.py"}
	if diff := cmp.Diff(want, runArgs(w, "/run/x.env")); diff != "" {
		t.Errorf("without GPUs (-want +got):\n%s", diff)
	}
	w.GPUs = true
	want = []string{"docker", "run", "-d", "--name", "anycloud-train", "--restart", "unless-stopped", "--env-file", "/run/x.env", "--gpus", "all", "ghcr.io/me/train:1", "python", "train.py"}
	if diff := cmp.Diff(want, runArgs(w, "/run/x.env")); diff != "" {
		t.Errorf("with GPUs (-want +got):\n%s", diff)
	}
}

// signalBuffer calls seen once what it holds contains want.
type signalBuffer struct {
	lockedBuffer
	want string
	seen func()
	once sync.Once
}

func (b *signalBuffer) Write(p []byte) (int, error) {
	n, err := b.lockedBuffer.Write(p)
	if strings.Contains(b.lockedBuffer.String(), b.want) {
		b.once.Do(b.seen)
	}
	return n, err
}
