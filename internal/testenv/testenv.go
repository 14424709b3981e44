// Package testenv gives tests the real parts this machine has — the Docker
// engine and the demo image — and decides what happens when one is
// missing: a clear skip on a developer's machine, a failure under CI=true,
// where every required server must be present.
package testenv

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
)

// DemoImage is the tag tests run: the demo program of examples/demo,
// built FROM scratch.
const DemoImage = "anycloud-demo:test"

// Missing skips t with reason, or fails it under CI=true.
func Missing(t testing.TB, reason string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("required for CI: %s", reason)
	}
	t.Skipf("skipped: %s (under CI=true this fails)", reason)
}

// RequireDocker returns a client of a reachable Docker engine.
func RequireDocker(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(client.FromEnv)
	if err != nil {
		Missing(t, "Docker client: "+err.Error())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Ping(ctx, client.PingOptions{}); err != nil {
		Missing(t, "Docker engine unreachable: "+err.Error())
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var (
	buildOnce sync.Once
	buildErr  error
)

// RequireDemoImage builds DemoImage once per test binary, from the demo
// program compiled statically, and returns its tag. Every checkout builds
// the same image from the same source (the engine's build cache hands
// back the image it made before), so that the tag never moves under
// another suite that runs or pushes it.
func RequireDemoImage(t testing.TB) string {
	t.Helper()
	c := RequireDocker(t)
	buildOnce.Do(func() { buildErr = buildDemo(c, RepoRoot()) })
	if buildErr != nil {
		t.Fatalf("build %s: %v", DemoImage, buildErr)
	}
	return DemoImage
}

// buildDemo builds DemoImage from the module checked out at root.
func buildDemo(c *client.Client, root string) error {
	dir, err := os.MkdirTemp("", "demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bin := filepath.Join(dir, "demo")
	// -trimpath and no VCS stamp: the program holds no trace of where it
	// was checked out.
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-o", bin, "./examples/demo")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+runtime.GOARCH)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build examples/demo: %v\n%s", err, out)
	}
	program, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	dockerfile, err := os.ReadFile(filepath.Join(root, "examples", "demo", "Dockerfile"))
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		data []byte
		mode int64
	}{{"Dockerfile", dockerfile, 0o644}, {"demo", program, 0o755}} {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))}); err != nil {
			return err
		}
		tw.Write(f.data)
	}
	tw.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := c.ImageBuild(ctx, &buf, client.ImageBuildOptions{Tags: []string{DemoImage}, Remove: true, ForceRemove: true})
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

// RepoRoot is the module's root directory.
func RepoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// ShortTempDir makes a temp dir with a short path (unix socket paths are
// limited to about 100 bytes) and removes it after the test.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ac")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}
