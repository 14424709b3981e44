package manifests

import (
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"
)

// Size limits. They bound what one user input can make the control plane
// hold in memory and write to the store, and they are documented in the
// README. A secret value is delivered as one environment variable, and
// Linux allows at most 128 KiB per variable (MAX_ARG_STRLEN), so a value
// near that would fail at launch, long after it was accepted.
const (
	// MaxValueBytes bounds one secret value.
	MaxValueBytes = 64 << 10
	// MaxBundleBytes bounds the keys and values of one bundle together.
	MaxBundleBytes = 1 << 20
	// MaxFileBytes bounds one manifest file (or standard input).
	MaxFileBytes = 8 << 20
	// MaxRequestBytes bounds one API request. An apply is one store
	// transaction, and a directory of 10,000 manifests (DESIGN §7) is
	// about 5 MiB of JSON.
	MaxRequestBytes = 16 << 20
)

// CheckSecretValue says why v cannot be delivered as an environment
// variable, or returns "". The message never quotes v.
//
// A NUL byte ends a C string: the container runtime refuses it with an
// error that quotes the whole value, and execve would truncate it.
// Invalid UTF-8 is mangled to U+FFFD on the way through JSON. Both are
// refused where they come in, naming the bundle and key only.
func CheckSecretValue(v string) string {
	switch {
	case len(v) > MaxValueBytes:
		return fmt.Sprintf("the value is %s; the limit is %s per value", byteSize(len(v)), byteSize(MaxValueBytes))
	case strings.IndexByte(v, 0) >= 0:
		return "the value contains a NUL byte, which an environment variable cannot carry (binary data: encode it, e.g. base64)"
	case !utf8.ValidString(v):
		return "the value is not valid UTF-8, which an environment variable cannot carry intact (binary data: encode it, e.g. base64)"
	}
	return ""
}

// CheckSecrets checks every value of one bundle (or credentials object)
// and their total size. what names the object in messages ("secret bundle
// \"hf\""). Keys are named only when they are valid names: an invalid key
// may be a value typed in its place.
func CheckSecrets(what string, values map[string]string) []string {
	var problems []string
	total := 0
	for _, k := range slices.Sorted(maps.Keys(values)) {
		v := values[k]
		total += len(k) + len(v)
		if msg := CheckSecretValue(v); msg != "" {
			problems = append(problems, fmt.Sprintf("%s key %s: %s", what, KeyName(k), msg))
		}
	}
	if total > MaxBundleBytes {
		problems = append(problems, fmt.Sprintf("%s: its keys and values are %s; the limit is %s per bundle", what, byteSize(total), byteSize(MaxBundleBytes)))
	}
	return problems
}

// KeyName renders a key for a message: quoted when it is a valid
// environment variable name, and otherwise described without its text,
// because a key that is not a name is often a value typed where the key
// belongs (a missing "KEY=", a missing ':' in YAML).
func KeyName(k string) string {
	if ValidEnvKey(k) {
		return k
	}
	return "<not a valid name; not shown, as it may be a value>"
}

// fieldNameRE is what an unknown field must look like to be echoed in an
// error: a plausible identifier. Anything else may be a secret value in
// the wrong place.
var fieldNameRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.\-/]{0,62}$`)

// quoteField quotes an unknown field name for a message, or describes it
// when it does not look like a field name.
func quoteField(k string) string {
	if fieldNameRE.MatchString(k) {
		return fmt.Sprintf("%q", k)
	}
	return "(not shown: it does not look like a field name and may be a value)"
}

func byteSize(n int) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
