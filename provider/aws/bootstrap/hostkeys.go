package bootstrap

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
)

// The markers around the host public keys that cloud-init's
// keys_to_console module writes to the VM's console, which EC2 returns
// from GetConsoleOutput.
const (
	consoleKeysBegin = "-----BEGIN SSH HOST KEY KEYS-----"
	consoleKeysEnd   = "-----END SSH HOST KEY KEYS-----"
)

// ErrNoHostKeys is wrapped by HostKeysFromConsole's error when the console
// does not hold the VM's host keys yet: cloud-init prints them near the
// end of the VM's first boot.
var ErrNoHostKeys = errors.New("the VM's console shows no SSH host keys yet")

// HostKeysFromConsole returns the SSH host public keys in a VM's console
// output, from the last block cloud-init printed (a VM that booted twice
// printed two; the last is the current one). Lines that are not keys are
// skipped. Console output arrives through the cloud's API, authenticated
// with the account's credentials, so a key read here can be pinned before
// anything is sent to the VM.
func HostKeysFromConsole(out []byte) ([]ssh.PublicKey, error) {
	end := bytes.LastIndex(out, []byte(consoleKeysEnd))
	if end < 0 {
		return nil, ErrNoHostKeys
	}
	begin := bytes.LastIndex(out[:end], []byte(consoleKeysBegin))
	if begin < 0 {
		return nil, ErrNoHostKeys
	}
	var keys []ssh.PublicKey
	sc := bufio.NewScanner(bytes.NewReader(out[begin+len(consoleKeysBegin) : end]))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		// Some images prefix console lines ("ec2: ssh-ed25519 AAAA…").
		if i := strings.Index(line, "ssh-"); i > 0 {
			line = line[i:]
		} else if i := strings.Index(line, "ecdsa-"); i > 0 {
			line = line[i:]
		}
		k, _, _, _, err := ssh.ParseAuthorizedKey([]byte(line))
		if err != nil {
			continue
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%w (the key block is empty)", ErrNoHostKeys)
	}
	return keys, nil
}

// PreferredHostKey is the key to pin among a VM's host keys: ED25519 (the
// type anycloud's user-data asks cloud-init to make), else the first.
func PreferredHostKey(keys []ssh.PublicKey) ssh.PublicKey {
	for _, k := range keys {
		if k.Type() == ssh.KeyAlgoED25519 {
			return k
		}
	}
	if len(keys) == 0 {
		return nil
	}
	return keys[0]
}

// instanceIDRE is what a pin may be named by: an EC2 instance id, or the
// like from another cloud. Never a space, which would split the line.
var instanceIDRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// pinMu serializes read-modify-write of known_hosts files in this process.
var pinMu sync.Mutex

// PinnedHostKey returns the host key pinned for the VM instanceID of the
// deployment whose keys are k, or nil when none is pinned yet.
func (k *Keys) PinnedHostKey(instanceID string) (ssh.PublicKey, error) {
	pinMu.Lock()
	defer pinMu.Unlock()
	pins, err := readPins(k.KnownHostsPath)
	if err != nil {
		return nil, err
	}
	return pins[instanceID], nil
}

// PinHostKey records key as the host key of VM instanceID and returns the
// key now pinned for it. A VM's pin is never replaced: if one exists, it
// is returned and key is ignored, so that a console that later shows
// another key cannot move the pin. The file is in OpenSSH's known_hosts
// format with the instance id as the host name (use it with ssh's
// HostKeyAlias).
func (k *Keys) PinHostKey(instanceID string, key ssh.PublicKey) (ssh.PublicKey, error) {
	if !instanceIDRE.MatchString(instanceID) {
		return nil, fmt.Errorf("pin host key: invalid instance id %q", instanceID)
	}
	if key == nil {
		return nil, fmt.Errorf("pin host key of %s: no key", instanceID)
	}
	pinMu.Lock()
	defer pinMu.Unlock()
	pins, err := readPins(k.KnownHostsPath)
	if err != nil {
		return nil, err
	}
	if old := pins[instanceID]; old != nil {
		return old, nil
	}
	data, err := os.ReadFile(k.KnownHostsPath)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("pin host key: %w", err)
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		data = append(data, '\n')
	}
	data = append(data, instanceID+" "+authorizedLine(key, "")+"\n"...)
	if err := writeAtomic(k.KnownHostsPath, data, 0o644); err != nil {
		return nil, fmt.Errorf("pin host key: %w", err)
	}
	return key, nil
}

// readPins parses a known_hosts file written by PinHostKey; a missing file
// has no pins.
func readPins(path string) (map[string]ssh.PublicKey, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]ssh.PublicKey{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read pinned host keys: %w", err)
	}
	pins := map[string]ssh.PublicKey{}
	for n, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		host, rest, ok := strings.Cut(line, " ")
		key, _, _, _, err := ssh.ParseAuthorizedKey([]byte(rest))
		if !ok || err != nil {
			return nil, fmt.Errorf("read pinned host keys: %s:%d: not a known_hosts line", path, n+1)
		}
		if _, dup := pins[host]; !dup {
			pins[host] = key
		}
	}
	return pins, nil
}

// AuthorizedLine is key as one authorized_keys line, without a comment or
// a trailing newline.
func AuthorizedLine(key ssh.PublicKey) string { return authorizedLine(key, "") }
