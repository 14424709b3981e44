package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"golang.org/x/crypto/bcrypt"
)

// RegistryVersion is the distribution release the test registry is built
// from, with `go install` through the Go module proxy (the Docker engine
// here reaches no registry, so no image can be pulled).
const RegistryVersion = "v3.0.0"

// RegistryImage is the test registry's image: distribution's registry,
// compiled statically, FROM scratch. Built once per machine, reused by tag.
const RegistryImage = "anycloud-test-registry:" + RegistryVersion

// registryConfig serves on :5000 with htpasswd (bcrypt) authentication:
// every pull and push needs the user and password.
const registryConfig = `version: 0.1
log: {level: info, formatter: text}
storage:
  filesystem: {rootdirectory: /var/lib/registry}
  delete: {enabled: true}
http: {addr: ":5000"}
auth:
  htpasswd: {realm: anycloud-test, path: /auth/htpasswd}
`

var (
	registryOnce sync.Once
	registryErr  error
)

// RequireRegistryImage builds RegistryImage unless the engine has it. The
// first build on a machine downloads distribution's modules through the
// Go module proxy and takes minutes; later ones find the image.
func RequireRegistryImage(t testing.TB) string {
	t.Helper()
	docker := RequireDocker(t)
	registryOnce.Do(func() { registryErr = buildRegistry(docker) })
	if registryErr != nil {
		t.Fatalf("build %s: %v", RegistryImage, registryErr)
	}
	return RegistryImage
}

func buildRegistry(c *client.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if _, err := c.ImageInspect(ctx, RegistryImage); err == nil {
		return nil
	}
	dir, err := os.MkdirTemp("", "registry-build")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	cmd := exec.CommandContext(ctx, "go", "install", "-trimpath", "-ldflags=-s -w",
		"github.com/distribution/distribution/v3/cmd/registry@"+RegistryVersion)
	cmd.Dir = dir // outside this module: its own go.mod decides the versions
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH, "GOBIN="+dir, "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go install distribution/v3/cmd/registry@%s: %v\n%s", RegistryVersion, err, out)
	}
	program, err := os.ReadFile(filepath.Join(dir, "registry"))
	if err != nil {
		return err
	}
	dockerfile := "FROM scratch\nCOPY registry /registry\nCOPY config.yml /etc/distribution/config.yml\nCOPY tmp /tmp\nENTRYPOINT [\"/registry\"]\nCMD [\"serve\", \"/etc/distribution/config.yml\"]\n"
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
		mode int64
	}{{"Dockerfile", []byte(dockerfile), 0o644}, {"config.yml", []byte(registryConfig), 0o644}, {"registry", program, 0o755}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		tw.Write(f.data)
	}
	tw.WriteHeader(&tar.Header{Name: "tmp/", Typeflag: tar.TypeDir, Mode: 0o1777})
	tw.Close()
	res, err := c.ImageBuild(ctx, &buf, client.ImageBuildOptions{Tags: []string{RegistryImage}, Remove: true, ForceRemove: true})
	if err != nil {
		return err
	}
	defer res.Body.Close()
	out, _ := io.ReadAll(res.Body)
	if bytes.Contains(out, []byte(`"error"`)) {
		return fmt.Errorf("docker build: %s", out)
	}
	return nil
}

// Registry is a private registry running in a container of its own,
// published on 127.0.0.1. The Docker engine pulls from it as from any
// registry (127.0.0.0/8 is an insecure registry by default, so plain
// HTTP is accepted), and every pull needs User and Password.
type Registry struct {
	// Host is host:port, as an image reference starts.
	Host     string
	User     string
	Password string
	docker   *client.Client
	id       string
}

// StartRegistry runs a registry that accepts user with password, until
// the end of the test.
func StartRegistry(t testing.TB, user, password string) *Registry {
	t.Helper()
	image := RequireRegistryImage(t)
	docker := RequireDocker(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := network.ParsePort("5000/tcp")
	created, err := docker.ContainerCreate(ctx, client.ContainerCreateOptions{
		Config: &container.Config{
			Image: image, ExposedPorts: network.PortSet{port: struct{}{}}, Labels: map[string]string{"anycloud-test": "registry"},
			Env: []string{"OTEL_TRACES_EXPORTER=none"}, // no collector to send traces to
		},
		HostConfig: &container.HostConfig{
			PortBindings: network.PortMap{port: {{HostIP: netip.MustParseAddr("127.0.0.1"), HostPort: "0"}}},
		},
	})
	if err != nil {
		t.Fatalf("create registry: %v", err)
	}
	r := &Registry{User: user, Password: password, docker: docker, id: created.ID}
	t.Cleanup(func() {
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(r.Log()), "\n")
			t.Logf("registry log (last lines):\n%s", strings.Join(lines[max(0, len(lines)-15):], "\n"))
		}
		docker.ContainerRemove(context.Background(), created.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
	})
	// The password file goes in before the start; no bind mount, so the
	// engine need not see this machine's files.
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	line := []byte(user + ":" + string(hash) + "\n")
	tw.WriteHeader(&tar.Header{Name: "auth/", Typeflag: tar.TypeDir, Mode: 0o755})
	tw.WriteHeader(&tar.Header{Name: "auth/htpasswd", Mode: 0o644, Size: int64(len(line))})
	tw.Write(line)
	tw.Close()
	if _, err := docker.CopyToContainer(ctx, created.ID, client.CopyToContainerOptions{DestinationPath: "/", Content: &buf}); err != nil {
		t.Fatalf("copy htpasswd into the registry: %v", err)
	}
	if _, err := docker.ContainerStart(ctx, created.ID, client.ContainerStartOptions{}); err != nil {
		t.Fatalf("start registry: %v", err)
	}
	ins, err := docker.ContainerInspect(ctx, created.ID, client.ContainerInspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	bindings := ins.Container.NetworkSettings.Ports[port]
	if len(bindings) == 0 {
		t.Fatalf("registry: port 5000 is not published")
	}
	r.Host = "127.0.0.1:" + bindings[0].HostPort
	// Up once /v2/ asks for credentials.
	deadline := time.Now().Add(30 * time.Second)
	for {
		res, err := http.Get("http://" + r.Host + "/v2/")
		if err == nil {
			res.Body.Close()
			if res.StatusCode == http.StatusUnauthorized {
				return r
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("registry on %s does not answer (last: %v)\n%s", r.Host, err, r.Log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Log is what the registry printed so far.
func (r *Registry) Log() string {
	rc, err := r.docker.ContainerLogs(context.Background(), r.id, client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		return err.Error()
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return string(b)
}

// Auth is the engine's X-Registry-Auth value for this registry.
func (r *Registry) Auth() string {
	b, _ := json.Marshal(map[string]string{"username": r.User, "password": r.Password, "serveraddress": r.Host})
	return base64.URLEncoding.EncodeToString(b)
}

// Push puts the local image src into the registry as repo:tag (repo
// without the host), then removes the local name, so that whoever runs
// Host/repo:tag must pull it through the registry. It returns the full
// reference.
func (r *Registry) Push(t testing.TB, src, repoTag string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ref := r.Host + "/" + repoTag
	if _, err := r.docker.ImageTag(ctx, client.ImageTagOptions{Source: src, Target: ref}); err != nil {
		t.Fatalf("tag %s as %s: %v", src, ref, err)
	}
	res, err := r.docker.ImagePush(ctx, ref, client.ImagePushOptions{RegistryAuth: r.Auth()})
	if err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	err = res.Wait(ctx)
	res.Close()
	if err != nil {
		t.Fatalf("push %s: %v\n%s", ref, err, r.Log())
	}
	r.RemoveLocal(t, ref)
	return ref
}

// RemoveLocal removes the engine's name ref (not the image it names, when
// other names keep it), so that the next run of ref pulls it again.
func (r *Registry) RemoveLocal(t testing.TB, ref string) {
	t.Helper()
	_, err := r.docker.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{})
	if err != nil && !strings.Contains(strings.ToLower(err.Error()), "no such image") {
		t.Fatalf("remove the local name %s: %v", ref, err)
	}
}
