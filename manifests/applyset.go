package manifests

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
)

var nonSetChars = regexp.MustCompile(`[^a-z0-9-]+`)

// DefaultApplySet derives a stable apply-set name from the sources of an
// apply: the base name of the first source and a hash of every source's
// absolute path, so that the same directory always names the same set
// wherever the command runs from. Standard input is the set "stdin".
//
// Whether directories are read recursively is part of the name: `apply
// -f DIR --prune` reads only DIR's own files, and sharing the set of
// `apply -f DIR -R --prune` (and of the watch-dir controller) would
// prune every object from the subdirectories. The recursive name is the
// one it always was; a directory read without -R names another set.
func DefaultApplySet(sources []string, recursive bool) string {
	var abs []string
	for _, s := range sources {
		if s == "-" {
			abs = append(abs, "-")
			continue
		}
		a, err := filepath.Abs(s)
		if err != nil {
			a = s
		}
		a = filepath.Clean(a)
		if fi, err := os.Stat(a); err == nil && fi.IsDir() && !recursive {
			a += string(filepath.Separator) + "*" // this directory's files only
		}
		abs = append(abs, a)
	}
	if len(abs) == 1 && abs[0] == "-" {
		return "stdin"
	}
	slices.Sort(abs)
	sum := sha256.Sum256([]byte(strings.Join(abs, "\x00")))
	base := strings.ToLower(filepath.Base(strings.TrimSuffix(sources[0], string(filepath.Separator))))
	base = strings.Trim(nonSetChars.ReplaceAllString(strings.TrimSuffix(base, filepath.Ext(base)), "-"), "-")
	if base == "" {
		base = "source"
	}
	if len(base) > 40 {
		base = base[:40]
	}
	return base + "-" + hex.EncodeToString(sum[:4])
}
