package state

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/anycloud/anycloud/manifests"
)

// Buckets of the API's users: name → apiUserRecord, and the hash of each
// one's token → name (the lookup of every remote request).
const (
	bucketTokens      = "tokens"
	bucketTokenHashes = "tokenhashes"
)

// APIUser is a person (or a CI job) allowed to use the API remotely with
// a bearer token. Only the token's SHA-256 is stored: the token itself is
// returned once, by AddAPIUser, and never again.
type APIUser struct {
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"createdAt"`
}

type apiUserRecord struct {
	APIUser
	Hash string `json:"sha256"`
}

// ErrUnauthorized: no user has that token (or the user was removed).
var ErrUnauthorized = errors.New("unauthorized: no user has this token")

// TokenPrefix starts every token, so that one is recognisable in a
// config file or a secret scanner.
const TokenPrefix = "acp_"

// APIUsers is implemented by stores that keep the API's users.
type APIUsers interface {
	// AddAPIUser makes a user and returns its token: the only time it
	// exists outside the user's hands.
	AddAPIUser(ctx context.Context, name string) (string, error)
	ListAPIUsers(ctx context.Context) ([]APIUser, error)
	// RemoveAPIUser removes a user; its token stops working at once.
	RemoveAPIUser(ctx context.Context, name string) error
	// Authenticate returns the user whose token this is, or
	// ErrUnauthorized.
	Authenticate(ctx context.Context, token string) (string, error)
}

func tokenHash(token string) string {
	h := sha256.Sum256([]byte(token))
	return hex.EncodeToString(h[:])
}

// AddAPIUser implements APIUsers.
func (s *core) AddAPIUser(ctx context.Context, name string) (string, error) {
	if msg := manifests.ValidateName(name); msg != "" {
		return "", fmt.Errorf("user name: %s: %w", msg, ErrInvalid)
	}
	var b [32]byte
	rand.Read(b[:])
	token := TokenPrefix + base64.RawURLEncoding.EncodeToString(b[:])
	rec := apiUserRecord{APIUser: APIUser{Name: name, CreatedAt: s.now().UTC().Truncate(time.Second)}, Hash: tokenHash(token)}
	data, err := json.Marshal(rec)
	if err != nil {
		return "", err
	}
	err = s.update(ctx, func(t *txn) error {
		old, _, err := t.tx.get(bucketTokens, name)
		if err != nil {
			return err
		}
		if old != nil {
			return fmt.Errorf("user %q exists (remove it first to issue a new token): %w", name, ErrConflict)
		}
		if err := t.tx.put(bucketTokens, name, data); err != nil {
			return err
		}
		return t.tx.put(bucketTokenHashes, rec.Hash, []byte(name))
	})
	if err != nil {
		return "", err
	}
	return token, nil
}

// ListAPIUsers implements APIUsers.
func (s *core) ListAPIUsers(ctx context.Context) ([]APIUser, error) {
	out := []APIUser{}
	_, err := s.be.view(ctx, func(tx kvReader) error {
		return tx.scan(bucketTokens, "", func(_, v []byte, _ int64) error {
			var rec apiUserRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return err
			}
			out = append(out, rec.APIUser)
			return nil
		})
	})
	return out, err
}

// RemoveAPIUser implements APIUsers.
func (s *core) RemoveAPIUser(ctx context.Context, name string) error {
	return s.update(ctx, func(t *txn) error {
		v, _, err := t.tx.get(bucketTokens, name)
		if err != nil {
			return err
		}
		if v == nil {
			return fmt.Errorf("user %q: %w", name, ErrNotFound)
		}
		var rec apiUserRecord
		if err := json.Unmarshal(v, &rec); err != nil {
			return err
		}
		if err := t.tx.del(bucketTokens, name); err != nil {
			return err
		}
		return t.tx.del(bucketTokenHashes, rec.Hash)
	})
}

// Authenticate implements APIUsers: one read of the token's hash, so a
// removal is seen by the next request.
func (s *core) Authenticate(ctx context.Context, token string) (string, error) {
	if token == "" {
		return "", ErrUnauthorized
	}
	var name string
	_, err := s.be.view(ctx, func(tx kvReader) error {
		v, _, err := tx.get(bucketTokenHashes, tokenHash(token))
		name = string(v)
		return err
	})
	if err != nil {
		return "", err
	}
	if name == "" {
		return "", ErrUnauthorized
	}
	return name, nil
}

var (
	_ APIUsers = (*Bolt)(nil)
	_ APIUsers = (*Etcd)(nil)
)
