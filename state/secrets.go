package state

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/anycloud/anycloud/manifests"
	"github.com/anycloud/anycloud/seal"
)

// Sealed values: written and opened one key at a time, each sealed under
// an identity naming its object and key.

// keyCheckIdentity seals a known value at first use, so that opening the
// store with another key fails at once instead of when a secret is needed.
const keyCheckIdentity = "anycloud/keycheck"

// writeSecrets seals and stores values for o and records their key names
// in o's status. It reports whether the values changed. values == nil
// keeps what is stored.
func (t *txn) writeSecrets(o manifests.Object, values map[string]string) (bool, error) {
	k, name := o.GetKind(), o.GetMeta().Name
	if k == manifests.KindDeployment {
		if values != nil {
			return false, fmt.Errorf("deployment %q: secret values belong in a SecretBundle: %w", name, ErrInvalid)
		}
		return false, nil
	}
	if c, ok := o.(*manifests.Credentials); ok && values == nil {
		if c.Spec.AWS == nil || c.Spec.AWS.AccessKeyID == "" {
			values = map[string]string{} // no static keys: drop any stored
		} else if v, _, err := t.tx.get(bucketSealed, sealedKey(k, name)); err != nil {
			return false, err
		} else if v == nil {
			return false, fmt.Errorf("credentials %q spec.aws.accessKeyId: the secret access key is missing: %w", name, ErrInvalid)
		}
	}
	if b, ok := o.(*manifests.SecretBundle); ok && values == nil && b.Metadata.Generation == 0 {
		return false, fmt.Errorf("secret bundle %q: no values: %w", name, ErrInvalid)
	}
	if values == nil {
		return false, nil
	}
	// The last line of defence for every entry point: a value that cannot
	// be delivered as env never reaches the store, where the launch that
	// fails on it would quote it in an error.
	what := fmt.Sprintf("secret bundle %q", name)
	if k == manifests.KindCredentials {
		what = fmt.Sprintf("credentials %q", name)
	}
	if problems := manifests.CheckSecrets(what, values); len(problems) > 0 {
		return false, fmt.Errorf("%s: %w", strings.Join(problems, "; "), ErrInvalid)
	}
	if k == manifests.KindSecretBundle {
		for key := range values {
			if !manifests.ValidEnvKey(key) {
				return false, fmt.Errorf("%s: a key is not a valid environment variable name (not shown, as it may be a value): %w", what, ErrInvalid)
			}
		}
	}
	old, err := t.openSecrets(k, name)
	if err != nil {
		return false, err
	}
	changed := !maps.Equal(old, values)
	for k := range old {
		old[k] = ""
	}
	if !changed {
		return false, nil
	}
	sealed := make(map[string][]byte, len(values))
	keys := make([]string, 0, len(values))
	for key, v := range values {
		c, err := t.s.keys.Seal(secretIdentity(k, name, key), []byte(v))
		if err != nil {
			return false, err
		}
		sealed[key] = c
		keys = append(keys, key)
	}
	slices.Sort(keys)
	data, err := json.Marshal(sealed)
	if err != nil {
		return false, err
	}
	if err := t.tx.put(bucketSealed, sealedKey(k, name), data); err != nil {
		return false, err
	}
	switch o := o.(type) {
	case *manifests.SecretBundle:
		o.Status.Keys = keys
		o.Status.UpdatedAt = t.s.now().UTC().Truncate(time.Second)
	case *manifests.Credentials:
		o.Status.SecretKeys = keys
		if len(keys) == 0 {
			o.Status.SecretKeys = nil
		}
	}
	return true, nil
}

func secretIdentity(k manifests.Kind, name, key string) string {
	return string(k) + "/" + name + "/" + key
}

func (t *txn) openSecrets(k manifests.Kind, name string) (map[string]string, error) {
	return openSecrets(t.s.keys, t.tx, k, name)
}

func openSecrets(keys *seal.Keyring, tx kvReader, k manifests.Kind, name string) (map[string]string, error) {
	out := map[string]string{}
	data, _, err := tx.get(bucketSealed, sealedKey(k, name))
	if err != nil {
		return nil, err
	}
	if data == nil {
		return out, nil
	}
	var sealed map[string][]byte
	if err := json.Unmarshal(data, &sealed); err != nil {
		return nil, fmt.Errorf("%s %q: sealed values are corrupt: %w", k, name, err)
	}
	for key, c := range sealed {
		v, err := keys.Open(secretIdentity(k, name, key), c)
		if err != nil {
			return nil, err
		}
		out[key] = string(v)
	}
	return out, nil
}

// OpenSecrets implements Store.
func (s *core) OpenSecrets(ctx context.Context, k manifests.Kind, name string) (map[string]string, int64, error) {
	var (
		out map[string]string
		gen int64
	)
	s.keyMu.RLock()
	defer s.keyMu.RUnlock()
	_, err := s.be.view(ctx, func(tx kvReader) error {
		o, err := getObject(tx, k, name)
		if err != nil {
			return err
		}
		gen = o.GetMeta().Generation
		out, err = openSecrets(s.keys, tx, k, name)
		return err
	})
	return out, gen, err
}
