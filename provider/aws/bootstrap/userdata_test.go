package bootstrap

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"sigs.k8s.io/yaml"

	"github.com/anycloud/anycloud/internal/testenv"
)

func TestUserDataIsCloudConfigWithThisDeploymentsKeys(t *testing.T) {
	k, err := EnsureKeys(t.TempDir(), "uid")
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"ec2-user", "ubuntu", "root"} {
		t.Run(user, func(t *testing.T) {
			out, err := UserData(k, user)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(out, []byte("#cloud-config\n")) {
				t.Fatalf("no #cloud-config header:\n%s", out)
			}
			var doc struct {
				SSHDeleteKeys     bool            `json:"ssh_deletekeys"`
				SSHGenKeyTypes    []string        `json:"ssh_genkeytypes"`
				SSH               map[string]bool `json:"ssh"`
				SSHAuthorizedKeys []string        `json:"ssh_authorized_keys"`
				DisableRoot       *bool           `json:"disable_root"`
				Users             []any           `json:"users"`
				RunCmd            []any           `json:"runcmd"`
			}
			if err := yaml.UnmarshalStrict(out, &doc); err != nil {
				t.Fatalf("not valid YAML (or unexpected keys): %v\n%s", err, out)
			}
			if !doc.SSHDeleteKeys {
				t.Error("ssh_deletekeys is not true")
			}
			if diff := cmp.Diff([]string{k.AuthorizedKey}, doc.SSHAuthorizedKeys); diff != "" {
				t.Errorf("ssh_authorized_keys (-want +got):\n%s", diff)
			}
			// The VM makes its own host key and shows it on the console;
			// no private key travels in user-data.
			if diff := cmp.Diff([]string{"ed25519"}, doc.SSHGenKeyTypes); diff != "" {
				t.Errorf("ssh_genkeytypes (-want +got):\n%s", diff)
			}
			if !doc.SSH["emit_keys_to_console"] {
				t.Error("ssh.emit_keys_to_console is not true")
			}
			if bytes.Contains(out, []byte("PRIVATE KEY")) {
				t.Errorf("user-data holds a private key:\n%s", out)
			}
			if user == "root" {
				if doc.DisableRoot == nil || *doc.DisableRoot {
					t.Error("root login not enabled for user root")
				}
			} else {
				want := []any{"default", map[string]any{
					"name": user, "sudo": "ALL=(ALL) NOPASSWD:ALL", "lock_passwd": true,
					"ssh_authorized_keys": []any{k.AuthorizedKey},
				}}
				if diff := cmp.Diff(want, doc.Users); diff != "" {
					t.Errorf("users (-want +got):\n%s", diff)
				}
			}
			if !strings.Contains(string(out), "docker info >/dev/null 2>&1 || systemctl enable --now docker") {
				t.Errorf("docker is not started:\n%s", out)
			}
		})
	}
}

func TestUserDataRefusesABadUserOrMissingKeys(t *testing.T) {
	k, err := EnsureKeys(t.TempDir(), "uid")
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"", "Root", "a b", "x\nruncmd: [reboot]", "$(id)"} {
		if _, err := UserData(k, user); err == nil {
			t.Errorf("user %q accepted", user)
		}
	}
	if _, err := UserData(&Keys{}, "ec2-user"); err == nil {
		t.Error("empty keys accepted")
	}
	if _, err := UserData(nil, "ec2-user"); err == nil {
		t.Error("nil keys accepted")
	}
}

// TestUserDataPassesCloudInitsOwnSchemaCheck runs `cloud-init schema` of
// the cloud emulator's VM image (real cloud-init, from Debian) on the
// user-data anycloud generates.
func TestUserDataPassesCloudInitsOwnSchemaCheck(t *testing.T) {
	image := testenv.RequireVMImage(t)
	k, err := EnsureKeys(t.TempDir(), "uid")
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"ec2-user", "root"} {
		out, err := UserData(k, user)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "user-data"), out, 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("docker", "run", "--rm", "--entrypoint", "cloud-init", "-v", dir+":/seed:ro", image,
			"schema", "--config-file", "/seed/user-data")
		res, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(res), "Valid cloud-config") || strings.Contains(string(res), "DEPRECATED") {
			t.Errorf("cloud-init schema of the user-data for %s: %v\n%s\n%s", user, err, res, out)
		}
	}
}
