package manifests

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// DecodeJSON reads one object sent to the API as strictly as Decode reads
// YAML: an unknown field, a key set twice, a value of the wrong type or
// trailing data is an error naming the field, never quoting a value.
// Unmarshal, by contrast, is for what the store and the API wrote
// themselves.
func DecodeJSON(data []byte) (Object, error) {
	if err := checkJSONKeys(data); err != nil {
		return nil, err
	}
	var tm TypeMeta
	if err := json.Unmarshal(data, &tm); err != nil {
		return nil, &FieldError{Msg: jsonMessage(err)}
	}
	if tm.APIVersion != APIVersion {
		return nil, &FieldError{Field: "apiVersion", Msg: fmt.Sprintf("unsupported apiVersion %q (use %s)", tm.APIVersion, APIVersion)}
	}
	o, err := New(tm.Kind)
	if err != nil {
		return nil, &FieldError{Field: "kind", Msg: fmt.Sprintf("unknown kind %q (one of Deployment, SecretBundle, Credentials)", tm.Kind)}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(o); err != nil {
		fe := &FieldError{Msg: jsonMessage(err)}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			fe.Field = te.Field
		}
		return nil, fe
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &FieldError{Msg: "unexpected data after the object"}
	}
	return o, nil
}

// jsonMessage rewords encoding/json's errors without values: its unknown
// field error quotes the key, which may be a value in the wrong place.
func jsonMessage(err error) string {
	var (
		te *json.UnmarshalTypeError
		se *json.SyntaxError
	)
	switch {
	case errors.As(err, &te):
		return fmt.Sprintf("expected %s, got a JSON %s", goTypeName(te.Type.Kind().String()), te.Value)
	case errors.As(err, &se):
		return fmt.Sprintf("malformed JSON at byte %d", se.Offset)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.TrimPrefix(err.Error(), "json: unknown field ")
		if unq, uerr := unquoteJSON(name); uerr == nil {
			name = unq
		}
		return "unknown field " + quoteField(name)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "malformed JSON: unexpected end"
	}
	return "malformed JSON"
}

func unquoteJSON(s string) (string, error) {
	var out string
	err := json.Unmarshal([]byte(s), &out)
	return out, err
}

func goTypeName(kind string) string {
	switch kind {
	case "string":
		return "a string"
	case "bool":
		return "true or false"
	case "map", "struct":
		return "an object"
	case "slice":
		return "a list"
	case "int", "int64", "int32", "uint64":
		return "an integer"
	}
	return "a " + kind
}

// checkJSONKeys refuses an object that sets a key twice (encoding/json
// silently keeps the last, where YAML decoding refuses it), naming the
// path. A key of a secret mapping that is not a valid name is not named.
func checkJSONKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var walk func(path string) error
	walk = func(path string) error {
		tok, err := dec.Token()
		if err != nil {
			return &FieldError{Field: path, Msg: jsonMessage(err)}
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				kt, err := dec.Token()
				if err != nil {
					return &FieldError{Field: path, Msg: jsonMessage(err)}
				}
				k, _ := kt.(string)
				sub := joinPath(path, k)
				if envKeyMap(path) && !ValidEnvKey(k) || !envKeyMap(path) && !fieldNameRE.MatchString(k) && !strings.HasPrefix(path, "metadata.") {
					sub = path
				}
				if seen[k] {
					what := "a key"
					if sub != path {
						what = fmt.Sprintf("key %q", k)
					}
					return &FieldError{Field: path, Msg: what + " is set twice"}
				}
				seen[k] = true
				if err := walk(sub); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return &FieldError{Field: path, Msg: jsonMessage(err)}
			}
		case json.Delim('['):
			for i := 0; dec.More(); i++ {
				if err := walk(fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return &FieldError{Field: path, Msg: jsonMessage(err)}
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return err
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return &FieldError{Msg: "unexpected data after the object"}
	}
	return nil
}

// strictJSON decodes b into v refusing unknown fields: for the custom
// unmarshalers of types that are objects in some forms, where the outer
// decoder's DisallowUnknownFields does not reach.
func strictJSON(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
