package bootstrap

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"
)

// Keys is one deployment's client key material, as kept on the user's
// machine. The VM's host key is not here: each VM makes its own, and
// anycloud pins it from the VM's console (see HostKeysFromConsole and
// PinHostKey).
type Keys struct {
	// Signer authenticates anycloud to the VM (the client private key).
	Signer ssh.Signer
	// AuthorizedKey is the client public key as one authorized_keys line,
	// without a trailing newline: "ssh-ed25519 AAAA… anycloud-<uid>".
	AuthorizedKey string

	// Path is the client private key ($home/.ssh/<uid>), usable with ssh -i.
	Path string
	// PublicPath is Path + ".pub".
	PublicPath string
	// KnownHostsPath ($home/.ssh/<uid>.known_hosts) holds the pinned host
	// key of each of the deployment's VMs, one line per instance id.
	KnownHostsPath string
}

// EnsureKeys returns the key material of the deployment uid under
// $home/.ssh, making it on first use: an ED25519 client key pair at <uid>
// and <uid>.pub. The private key is mode 0600 in a 0700 directory. An
// existing key is reused, never replaced; an unreadable one is an error.
// Concurrent callers for the same uid end up with the same key.
func EnsureKeys(home, uid string) (*Keys, error) {
	if err := checkUID(uid); err != nil {
		return nil, err
	}
	dir, err := keyDir(home)
	if err != nil {
		return nil, err
	}
	k := &Keys{
		Path:           filepath.Join(dir, uid),
		PublicPath:     filepath.Join(dir, uid+".pub"),
		KnownHostsPath: filepath.Join(dir, uid+".known_hosts"),
	}
	client, err := ensureKey(k.Path, k.PublicPath, "anycloud-"+uid)
	if err != nil {
		return nil, err
	}
	k.Signer = client
	k.AuthorizedKey = authorizedLine(client.PublicKey(), "anycloud-"+uid)
	return k, nil
}

// keyDir makes $home/.ssh, mode 0700, and returns its path.
func keyDir(home string) (string, error) {
	dir := filepath.Join(home, ".ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("make ssh key directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return "", fmt.Errorf("make ssh key directory: %w", err)
	}
	return dir, nil
}

// RemoveKeys deletes the key material of the deployment uid: its client
// keys and its pinned host keys (and the host key pair that anycloud
// made for VMs before they made their own). Files that are already gone
// are not an error.
func RemoveKeys(home, uid string) error {
	if err := checkUID(uid); err != nil {
		return err
	}
	dir := filepath.Join(home, ".ssh")
	var errs []error
	for _, name := range []string{uid, uid + ".pub", uid + ".known_hosts", uid + ".host", uid + ".host.pub"} {
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove ssh key: %w", err))
		}
	}
	return errors.Join(errs...)
}

// checkUID refuses a uid that is not a plain file name.
func checkUID(uid string) error {
	if uid == "" || uid == "." || uid == ".." || strings.ContainsAny(uid, `/\`+"\x00") {
		return fmt.Errorf("ssh keys: invalid deployment uid %q", uid)
	}
	return nil
}

// ensureKey loads the private key at path, or makes one there if there is
// none, and (re)writes its public half at pubPath when missing or stale.
func ensureKey(path, pubPath, comment string) (ssh.Signer, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = createKey(path, comment)
	}
	if err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("ssh key %s: %w", path, err)
	}
	pub := []byte(authorizedLine(signer.PublicKey(), comment) + "\n")
	if old, err := os.ReadFile(pubPath); err != nil || !bytes.Equal(old, pub) {
		if err := writeAtomic(pubPath, pub, 0o644); err != nil {
			return nil, fmt.Errorf("ssh key %s: %w", pubPath, err)
		}
	}
	return signer, nil
}

// createKey makes an ED25519 key and puts it at path unless another caller
// got there first; either way it returns the PEM now at path.
func createKey(path, comment string) ([]byte, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	block, err := ssh.MarshalPrivateKey(priv, comment)
	if err != nil {
		return nil, err
	}
	data := pem.EncodeToMemory(block)
	tmp, err := writeTemp(path, data, 0o600)
	if err != nil {
		return nil, err
	}
	defer os.Remove(tmp)
	// A hard link never replaces an existing file: the first key made wins.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return os.ReadFile(path)
		}
		return nil, err
	}
	return data, nil
}

// writeAtomic replaces path with data through a temporary file.
func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := writeTemp(path, data, mode)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// writeTemp writes data, synced, to a new file beside path and returns its
// name.
func writeTemp(path string, data []byte, mode os.FileMode) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// authorizedLine is key as an authorized_keys line with comment, without a
// trailing newline.
func authorizedLine(key ssh.PublicKey, comment string) string {
	line := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(key)), "\n")
	if comment != "" {
		line += " " + comment
	}
	return line
}
