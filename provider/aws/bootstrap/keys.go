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

// Keys is one deployment's SSH key material, as kept on the user's machine.
type Keys struct {
	// Signer authenticates anycloud to the VM (the client private key).
	Signer ssh.Signer
	// AuthorizedKey is the client public key as one authorized_keys line,
	// without a trailing newline: "ssh-ed25519 AAAA… anycloud-<uid>".
	AuthorizedKey string
	// HostKeyPEM is the VM's host private key in OpenSSH PEM format, for
	// user-data.
	HostKeyPEM []byte
	// HostKey is the VM's host public key, to pin when dialling.
	HostKey ssh.PublicKey
	// HostKeyLine is HostKey as one line, as in the .host.pub file and in
	// user-data, without a trailing newline.
	HostKeyLine string

	// Path is the client private key ($home/.ssh/<uid>), usable with ssh -i.
	Path string
	// PublicPath is Path + ".pub".
	PublicPath string
	// HostKeyPath is the host private key ($home/.ssh/<uid>.host).
	HostKeyPath string
	// HostPublicPath is HostKeyPath + ".pub".
	HostPublicPath string
}

// EnsureKeys returns the key material of the deployment uid under
// $home/.ssh, making it on first use: an ED25519 client key pair at
// <uid> and <uid>.pub, and an ED25519 host key pair at <uid>.host and
// <uid>.host.pub. Private keys are mode 0600 in a 0700 directory. Existing
// keys are reused, never replaced; an unreadable one is an error. Concurrent
// callers for the same uid end up with the same keys.
func EnsureKeys(home, uid string) (*Keys, error) {
	if err := checkUID(uid); err != nil {
		return nil, err
	}
	dir := filepath.Join(home, ".ssh")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make ssh key directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("make ssh key directory: %w", err)
	}
	k := &Keys{
		Path:           filepath.Join(dir, uid),
		PublicPath:     filepath.Join(dir, uid+".pub"),
		HostKeyPath:    filepath.Join(dir, uid+".host"),
		HostPublicPath: filepath.Join(dir, uid+".host.pub"),
	}
	client, _, err := ensureKey(k.Path, k.PublicPath, "anycloud-"+uid)
	if err != nil {
		return nil, err
	}
	host, hostPEM, err := ensureKey(k.HostKeyPath, k.HostPublicPath, "anycloud-"+uid+".host")
	if err != nil {
		return nil, err
	}
	k.Signer = client
	k.AuthorizedKey = authorizedLine(client.PublicKey(), "anycloud-"+uid)
	k.HostKey = host.PublicKey()
	k.HostKeyLine = authorizedLine(k.HostKey, "anycloud-"+uid+".host")
	k.HostKeyPEM = hostPEM
	return k, nil
}

// RemoveKeys deletes the key material of the deployment uid. Keys that are
// already gone are not an error.
func RemoveKeys(home, uid string) error {
	if err := checkUID(uid); err != nil {
		return err
	}
	dir := filepath.Join(home, ".ssh")
	var errs []error
	for _, name := range []string{uid, uid + ".pub", uid + ".host", uid + ".host.pub"} {
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
// It returns the signer and the private key's PEM.
func ensureKey(path, pubPath, comment string) (ssh.Signer, []byte, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		data, err = createKey(path, comment)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("ssh key %s: %w", path, err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("ssh key %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, nil, fmt.Errorf("ssh key %s: %w", path, err)
	}
	pub := []byte(authorizedLine(signer.PublicKey(), comment) + "\n")
	if old, err := os.ReadFile(pubPath); err != nil || !bytes.Equal(old, pub) {
		if err := writeAtomic(pubPath, pub, 0o644); err != nil {
			return nil, nil, fmt.Errorf("ssh key %s: %w", pubPath, err)
		}
	}
	return signer, data, nil
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
