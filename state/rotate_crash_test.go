package state

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
)

// The rotation crash tests run a helper process (this test binary) that
// rotates the key of a store and is killed with SIGKILL, at a named step
// or at a random moment; the store must then open with every value.

const (
	envHelperHome = "ANYCLOUD_ROTATE_HELPER_HOME"
	envHelperStep = "ANYCLOUD_ROTATE_HELPER_STEP"
)

// TestRotateHelperProcess is not a test: it is the process the crash
// tests kill.
func TestRotateHelperProcess(t *testing.T) {
	home := os.Getenv(envHelperHome)
	if home == "" {
		t.Skip("helper process for the rotation crash tests")
	}
	s, err := OpenBolt(home, BoltOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(3)
	}
	step := rotateStep(os.Getenv(envHelperStep))
	s.onRotateStep = func(at rotateStep) {
		if at == step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
	fmt.Println("ready")
	for {
		if _, err := s.RotateKey(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(4)
		}
	}
}

func seedSealed(t *testing.T, home string, n int) {
	t.Helper()
	s, err := OpenBolt(home, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var writes []Write
	for i := range n {
		b := &manifests.SecretBundle{TypeMeta: manifests.TypeMeta{APIVersion: manifests.APIVersion, Kind: manifests.KindSecretBundle}, Metadata: manifests.ObjectMeta{Name: fmt.Sprintf("b%d", i)}}
		writes = append(writes, Write{Object: b, Secrets: map[string]string{"TOKEN": fmt.Sprintf("value-%d", i), "OTHER": "x"}})
	}
	if _, err := s.Apply(context.Background(), writes, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
}

// checkAllOpen opens the store and every sealed value in it.
func checkAllOpen(t *testing.T, home string, n int) {
	t.Helper()
	s, err := OpenBolt(home, BoltOptions{})
	if err != nil {
		t.Fatalf("the store does not open after the crash: %v", err)
	}
	defer s.Close()
	for i := range n {
		v, _, err := s.OpenSecrets(context.Background(), manifests.KindSecretBundle, fmt.Sprintf("b%d", i))
		if err != nil || v["TOKEN"] != fmt.Sprintf("value-%d", i) || v["OTHER"] != "x" {
			t.Fatalf("b%d after the crash: %v %v", i, v, err)
		}
	}
	if _, err := os.Stat(filepath.Join(home, seal.NewKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still there after the open: %v", seal.NewKeyFile, err)
	}
}

func helper(t *testing.T, home, step string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^TestRotateHelperProcess$")
	cmd.Env = append(os.Environ(), envHelperHome+"="+home, envHelperStep+"="+step)
	cmd.Stderr = os.Stderr
	return cmd
}

func killedBySIGKILL(err error) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

func TestRotationKilledAtEveryStepLeavesAStoreThatOpens(t *testing.T) {
	const n = 50
	for _, step := range []rotateStep{stepKeyWritten, stepResealed, stepCommitted, stepInstalled} {
		t.Run(string(step), func(t *testing.T) {
			home := t.TempDir()
			seedSealed(t, home, n)
			oldKey, _ := os.ReadFile(filepath.Join(home, seal.KeyFile))
			err := helper(t, home, string(step)).Run()
			if !killedBySIGKILL(err) {
				t.Fatalf("helper: %v, want killed by SIGKILL", err)
			}
			checkAllOpen(t, home, n)
			key, _ := os.ReadFile(filepath.Join(home, seal.KeyFile))
			rotated := !bytes.Equal(key, oldKey)
			if want := step == stepCommitted || step == stepInstalled; rotated != want {
				t.Errorf("after a crash at %s: key rotated = %v, want %v", step, rotated, want)
			}
		})
	}
}

// TestRotationKilledAtRandomMomentsLeavesAStoreThatOpens kills a process
// that rotates the key over and over, at random moments, many rounds.
func TestRotationKilledAtRandomMomentsLeavesAStoreThatOpens(t *testing.T) {
	const n = 2000
	rounds := 12
	if testing.Short() {
		rounds = 4
	}
	home := t.TempDir()
	seedSealed(t, home, n)
	rotated := 0
	for round := range rounds {
		before, _ := os.ReadFile(filepath.Join(home, seal.KeyFile))
		cmd := helper(t, home, "")
		out, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 6)
		if _, err := out.Read(buf); err != nil { // "ready": the store is open
			t.Fatalf("round %d: helper did not start: %v", round, err)
		}
		time.Sleep(time.Duration(rand.IntN(400)) * time.Millisecond)
		cmd.Process.Signal(syscall.SIGKILL)
		cmd.Wait()
		checkAllOpen(t, home, n)
		if after, _ := os.ReadFile(filepath.Join(home, seal.KeyFile)); !bytes.Equal(before, after) {
			rotated++
		}
	}
	t.Logf("%d rounds, %d of them killed after at least one rotation committed", rounds, rotated)
}
