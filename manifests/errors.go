package manifests

import (
	"fmt"
	"strings"
)

// FieldError is one problem in user input, located as precisely as the
// input allows: file, document (1-based), line and field path.
type FieldError struct {
	File  string `json:"file,omitempty"`
	Doc   int    `json:"doc,omitempty"`
	Line  int    `json:"line,omitempty"`
	Field string `json:"field,omitempty"`
	// Object names the object, as "Kind/name", when it is known.
	Object string `json:"object,omitempty"`
	Msg    string `json:"message"`
	// Lookup, when set, is the path whose line locates the problem; it may
	// hold a key that Field leaves out because it may be a secret value.
	// It is never printed or sent, and Locate clears it.
	Lookup string `json:"-"`
}

func (e *FieldError) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Doc > 0 {
		fmt.Fprintf(&b, "document %d", e.Doc)
		if e.Object != "" {
			fmt.Fprintf(&b, " (%s)", e.Object)
		}
		b.WriteString(": ")
	} else if e.Object != "" {
		fmt.Fprintf(&b, "%s: ", e.Object)
	}
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// ErrorList is every problem found in one piece of input, reported together
// so that the user fixes them in one go.
type ErrorList []*FieldError

func (l ErrorList) Error() string {
	if len(l) == 1 {
		return l[0].Error()
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d problems:", len(l))
	for _, e := range l {
		b.WriteString("\n  ")
		b.WriteString(e.Error())
	}
	return b.String()
}

// Err returns l as an error, or nil when it is empty.
func (l ErrorList) Err() error {
	if len(l) == 0 {
		return nil
	}
	return l
}
