package controlplane

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

func TestMinimalEnvKeepsToolsAndDropsEverythingElse(t *testing.T) {
	got := MinimalEnv([]string{
		"PATH=/usr/bin", "HOME=/home/u", "LC_ALL=C.UTF-8", "DOCKER_HOST=unix:///x", "AWS_PROFILE=dev",
		"HF_TOKEN=secret", "AWS_SECRET_ACCESS_KEY=secret", "AWS_SESSION_TOKEN=secret", "AWS_ACCESS_KEY_ID=AKIA", "WANDB_API_KEY=secret", "MALFORMED",
	})
	want := []string{"PATH=/usr/bin", "HOME=/home/u", "LC_ALL=C.UTF-8", "DOCKER_HOST=unix:///x", "AWS_PROFILE=dev"}
	if !slices.Equal(got, want) {
		t.Errorf("MinimalEnv = %v, want %v", got, want)
	}
}

func TestPIDFileNamesThisProcessByPIDAndStartTime(t *testing.T) {
	home := t.TempDir()
	if _, err := writePIDFile(home); err != nil {
		t.Fatal(err)
	}
	if got := ReadPID(home); got != os.Getpid() {
		t.Errorf("ReadPID = %d, want %d", got, os.Getpid())
	}
	// The same pid with another start time is another process.
	os.WriteFile(filepath.Join(home, PIDFile), []byte(strconv.Itoa(os.Getpid())+" 1\n"), 0o600)
	if got := ReadPID(home); got != 0 {
		t.Errorf("ReadPID of a reused pid = %d, want 0", got)
	}
	if !RemoveStalePIDFile(home) {
		t.Error("the stale pid file was not removed")
	}
}
