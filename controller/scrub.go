package controller

import (
	"cmp"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// minScrubLen is the shortest secret value scrubbed wherever it appears.
// A shorter one ("1", "on") would also match ordinary words and numbers
// in messages; it is still scrubbed where it follows its key ("K=on").
const minScrubLen = 4

// scrubber removes the secret values of one launch from text before it is
// stored or shown: conditions, events, log lines and returned errors.
// Providers and the runtimes under them quote their input in errors (the
// Docker engine quotes a whole env entry it refuses), and such an error
// would otherwise be copied, unsealed, into the store and the API.
// Values are refused where they come in when they cannot be delivered;
// this is the defence in depth behind that.
type scrubber struct {
	r *strings.Replacer
}

// newScrubber scrubs the values of env, the resolved environment of one
// launch, except those set in plain, the deployment's own env (plain,
// and shown by status anyway).
func newScrubber(env, plain map[string]string) *scrubber {
	type pair struct{ old, new string }
	var pairs []pair
	add := func(old, key string) {
		if old != "" {
			pairs = append(pairs, pair{old, "<redacted " + key + ">"})
		}
	}
	for k, v := range env {
		if pv, ok := plain[k]; ok && pv == v || v == "" {
			continue
		}
		add(k+"="+v, k)
		if len(v) < minScrubLen {
			continue
		}
		// The forms an error may quote it in: raw, Go-quoted (%q),
		// ASCII-quoted and JSON-escaped, and each long line of a
		// multi-line value.
		add(v, k)
		add(strings.Trim(strconv.Quote(v), `"`), k)
		add(strings.Trim(strconv.QuoteToASCII(v), `"`), k)
		if b, err := json.Marshal(v); err == nil {
			add(strings.Trim(string(b), `"`), k)
		}
		for _, line := range strings.Split(v, "\n") {
			if len(line) >= 8 && line != v {
				add(line, k)
			}
		}
	}
	if len(pairs) == 0 {
		return &scrubber{}
	}
	// Longest first: the replacer tries patterns in argument order.
	slices.SortFunc(pairs, func(a, b pair) int { return cmp.Compare(len(b.old), len(a.old)) })
	args := make([]string, 0, 2*len(pairs))
	for _, p := range pairs {
		args = append(args, p.old, p.new)
	}
	return &scrubber{r: strings.NewReplacer(args...)}
}

// String scrubs one message.
func (s *scrubber) String(msg string) string {
	if s.r == nil {
		return msg
	}
	return s.r.Replace(msg)
}

// Error returns err with its message scrubbed. The result still answers
// errors.Is for the sentinels the original wraps (the controller's
// decisions rest on them), but does not unwrap to the original: nothing
// can print the unscrubbed text through it.
func (s *scrubber) Error(err error) error {
	if err == nil || s.r == nil {
		return err
	}
	msg := err.Error()
	clean := s.String(msg)
	if clean == msg {
		return err
	}
	return &scrubbedError{msg: clean, orig: err}
}

type scrubbedError struct {
	msg  string
	orig error
}

func (e *scrubbedError) Error() string { return e.msg }

// Is reports whether the original error is target.
func (e *scrubbedError) Is(target error) bool { return errors.Is(e.orig, target) }
