package bootstrap

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"

	"go.yaml.in/yaml/v3"
)

// installDocker makes sure Docker is installed and running, on Amazon Linux
// (dnf or yum, package docker) and on Debian or Ubuntu (apt, docker.io),
// and git, for spec.source.
// Best effort: if it fails, Run reports that docker is missing.
const installDocker = `if ! command -v docker >/dev/null 2>&1; then
  if command -v dnf >/dev/null 2>&1; then dnf install -y docker
  elif command -v yum >/dev/null 2>&1; then yum install -y docker
  elif command -v apt-get >/dev/null 2>&1; then
    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q docker.io
  fi
fi
docker info >/dev/null 2>&1 || systemctl enable --now docker
if ! command -v git >/dev/null 2>&1; then
  if command -v dnf >/dev/null 2>&1; then dnf install -y git
  elif command -v yum >/dev/null 2>&1; then yum install -y git
  elif command -v apt-get >/dev/null 2>&1; then apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q git
  fi
fi
`

// userRE is what useradd accepts on the distributions anycloud targets.
var userRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)

// cloudConfig is the part of cloud-init's schema that anycloud writes.
type cloudConfig struct {
	// SSHDeleteKeys and SSHGenKeyTypes make the VM drop any host key its
	// image carries and make a fresh ED25519 one of its own.
	SSHDeleteKeys  bool     `yaml:"ssh_deletekeys"`
	SSHGenKeyTypes []string `yaml:"ssh_genkeytypes"`
	// SSH.EmitKeysToConsole prints the host public keys to the console,
	// where anycloud reads them (GetConsoleOutput) to pin them.
	SSH               sshModule `yaml:"ssh"`
	DisableRoot       *bool     `yaml:"disable_root,omitempty"`
	SSHAuthorizedKeys []string  `yaml:"ssh_authorized_keys"`
	Users             []any     `yaml:"users,omitempty"`
	RunCmd            []any     `yaml:"runcmd"`
}

type sshModule struct {
	EmitKeysToConsole bool `yaml:"emit_keys_to_console"`
}

type cloudUser struct {
	Name              string   `yaml:"name"`
	Sudo              string   `yaml:"sudo"`
	LockPasswd        bool     `yaml:"lock_passwd"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys"`
}

// UserData is the cloud-init document (starting "#cloud-config", not
// base64-encoded) to launch a VM with: the VM replaces its image's host
// keys by a fresh ED25519 key and prints it to the console (to be pinned
// from GetConsoleOutput), k's client key is authorized for user (made a
// password-less sudoer if it is not the image's default user; root is
// allowed to log in when user is "root"), and Docker is installed and
// started. It holds a public key only: never a private key, never a
// secret value of a workload. Anyone allowed ec2:DescribeInstanceAttribute
// can read user-data.
func UserData(k *Keys, user string) ([]byte, error) {
	if k == nil || k.AuthorizedKey == "" {
		return nil, errors.New("user-data: incomplete keys")
	}
	if !userRE.MatchString(user) {
		return nil, fmt.Errorf("user-data: invalid login user %q", user)
	}
	cfg := cloudConfig{
		SSHDeleteKeys:     true,
		SSHGenKeyTypes:    []string{"ed25519"},
		SSH:               sshModule{EmitKeysToConsole: true},
		SSHAuthorizedKeys: []string{k.AuthorizedKey},
		RunCmd:            []any{[]string{"sh", "-c", installDocker}},
	}
	if user == "root" {
		no := false
		cfg.DisableRoot = &no
	} else {
		// An entry named like the image's default user is merged into it
		// by cloud-init; any other name is a new user.
		cfg.Users = []any{"default", cloudUser{
			Name:              user,
			Sudo:              "ALL=(ALL) NOPASSWD:ALL",
			LockPasswd:        true,
			SSHAuthorizedKeys: []string{k.AuthorizedKey},
		}}
	}
	var buf bytes.Buffer
	buf.WriteString("#cloud-config\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, fmt.Errorf("user-data: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("user-data: %w", err)
	}
	return buf.Bytes(), nil
}
