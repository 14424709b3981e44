package github

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/anycloud/anycloud/seal"
)

// TokenFile is the login's file name inside the home directory.
const TokenFile = ".token"

// loginIdentity binds the sealed login to its file: a ciphertext copied
// from a secret bundle does not open as a login, nor the reverse.
const loginIdentity = "GitHubLogin/" + TokenFile

// fileHeader starts the file, so that a person who opens it sees what it
// is (and that it is not a token).
const fileHeader = "anycloud github login, sealed with cipher.key; v1\n"

// ErrNotLoggedIn: there is no stored login.
var ErrNotLoggedIn = errors.New("not logged in to GitHub; run `anycloud login`")

// Login is what `anycloud login` keeps. It prints as redacted.
type Login struct {
	Token string `json:"token"`
	// User is the GitHub login the token belongs to, used as the user
	// name of registry logins.
	User string `json:"user"`
	// WebURL and APIURL are the GitHub the token was issued by. Git is
	// given the token only for repositories under WebURL.
	WebURL string `json:"webURL"`
	APIURL string `json:"apiURL"`
	// Registries are the container registry hosts (host[:port]) the token
	// is sent to for image pulls; images elsewhere are pulled without it.
	Registries []string `json:"registries"`
	// Scopes are the token's scopes when it was stored.
	Scopes    []string  `json:"scopes,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
}

// String never shows the token.
func (l Login) String() string {
	return fmt.Sprintf("github.Login{User: %q, WebURL: %q, Registries: %q, Token: redacted}", l.User, l.WebURL, l.Registries)
}

// GoString never shows the token.
func (l Login) GoString() string { return l.String() }

// ForRegistry reports whether the token is to be sent to the registry
// host (host[:port], as it starts an image reference).
func (l *Login) ForRegistry(host string) bool {
	return slices.Contains(l.Registries, strings.ToLower(host))
}

// Save seals l with keys and writes it to home/.token, mode 0600,
// replacing any earlier login atomically.
func Save(home string, keys *seal.Keyring, l *Login) error {
	if l.Token == "" {
		return errors.New("save login: empty token")
	}
	if err := seal.EnsureHome(home); err != nil {
		return err
	}
	plain, err := json.Marshal(l)
	if err != nil {
		return fmt.Errorf("save login: %w", err)
	}
	sealed, err := keys.Seal(loginIdentity, plain)
	clear(plain)
	if err != nil {
		return fmt.Errorf("save login: %w", err)
	}
	content := fileHeader + base64.StdEncoding.EncodeToString(sealed) + "\n"
	path := filepath.Join(home, TokenFile)
	tmp, err := os.CreateTemp(home, TokenFile+".*")
	if err != nil {
		return fmt.Errorf("save login: %w", err)
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("save login: %w", err)
	}
	if _, err := tmp.WriteString(content); err != nil {
		tmp.Close()
		return fmt.Errorf("save login: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("save login: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("save login: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("save login: %w", err)
	}
	return nil
}

// Load opens the login in home/.token. No file is ErrNotLoggedIn; a file
// that does not open under keys (another key, tampering) is an error that
// says to log in again, since a token can always be had anew.
func Load(home string, keys *seal.Keyring) (*Login, error) {
	path := filepath.Join(home, TokenFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotLoggedIn
	}
	if err != nil {
		return nil, fmt.Errorf("read login: %w", err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("login %s: mode %v is readable by others; run chmod 600 %s, or `anycloud logout` and log in again", path, fi.Mode().Perm(), path)
	}
	body, ok := bytes.CutPrefix(data, []byte(fileHeader))
	if !ok {
		return nil, fmt.Errorf("login %s: not a sealed anycloud login; run `anycloud login` again", path)
	}
	sealed, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(body)))
	if err != nil {
		return nil, fmt.Errorf("login %s: damaged; run `anycloud login` again", path)
	}
	plain, err := keys.Open(loginIdentity, sealed)
	if err != nil {
		return nil, fmt.Errorf("login %s: %w; run `anycloud login` again", path, err)
	}
	defer clear(plain)
	var l Login
	if err := json.Unmarshal(plain, &l); err != nil || l.Token == "" {
		return nil, fmt.Errorf("login %s: damaged; run `anycloud login` again", path)
	}
	return &l, nil
}

// Remove deletes the login in home. It reports whether there was one.
func Remove(home string) (bool, error) {
	err := os.Remove(filepath.Join(home, TokenFile))
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("remove login: %w", err)
	}
	return true, nil
}

// RegistryHost is the registry part of an image reference, as docker
// reads it: the first path element when it has a dot or a colon or is
// "localhost", else Docker Hub ("docker.io").
func RegistryHost(image string) string {
	first, rest, ok := strings.Cut(image, "/")
	if !ok || rest == "" {
		return "docker.io"
	}
	if strings.ContainsAny(first, ".:") || first == "localhost" {
		return strings.ToLower(first)
	}
	return "docker.io"
}
