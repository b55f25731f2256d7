package mapping

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Auth is a decoded `auth:` value. Its String, GoString, Format, MarshalJSON,
// MarshalYAML and LogValue methods never reveal the password.
type Auth struct {
	Username string
	Password string
	// Anonymous is set by `auth: none`: use no credentials at all, not even
	// the docker keychain's.
	Anonymous bool
}

const redacted = "REDACTED"

// String describes the credentials without the password.
func (a Auth) String() string {
	if a.Anonymous {
		return "anonymous"
	}
	if a.Password == "" {
		return fmt.Sprintf("user %q, no password", a.Username)
	}
	return fmt.Sprintf("user %q, password %s", a.Username, redacted)
}

// GoString is used by %#v; the password is replaced.
func (a Auth) GoString() string {
	pw := ""
	if a.Password != "" {
		pw = redacted
	}
	return fmt.Sprintf("mapping.Auth{Username:%q, Password:%q, Anonymous:%t}", a.Username, pw, a.Anonymous)
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, %x, %d, ...) print the
// redacted form.
func (a Auth) Format(f fmt.State, verb rune) {
	switch {
	case verb == 'v' && f.Flag('#'):
		io.WriteString(f, a.GoString())
	case verb == 'q':
		io.WriteString(f, strconv.Quote(a.String()))
	default:
		io.WriteString(f, a.String())
	}
}

type authView struct {
	Username  string `json:"username,omitempty" yaml:"username,omitempty"`
	Password  string `json:"password,omitempty" yaml:"password,omitempty"`
	Anonymous bool   `json:"anonymous,omitempty" yaml:"anonymous,omitempty"`
}

func (a Auth) view() authView {
	v := authView{Username: a.Username, Anonymous: a.Anonymous}
	if a.Password != "" {
		v.Password = redacted
	}
	return v
}

// MarshalJSON writes the username and "REDACTED" in place of the password.
func (a Auth) MarshalJSON() ([]byte, error) { return json.Marshal(a.view()) }

// MarshalYAML writes the username and "REDACTED" in place of the password.
func (a Auth) MarshalYAML() (any, error) { return a.view(), nil }

// LogValue keeps the password out of slog output.
func (a Auth) LogValue() slog.Value { return slog.StringValue(a.String()) }

// decodeAuth decodes dregsy's auth: base64 of {"username": "...",
// "password": "..."} or of user:password. Its errors never contain the
// value or any part of it.
func decodeAuth(s string) (*Auth, error) {
	s = strings.TrimSpace(s)
	if strings.EqualFold(s, "none") {
		return &Auth{Anonymous: true}, nil
	}
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(s) // unpadded
	}
	if err != nil {
		raw, err = base64.URLEncoding.DecodeString(s)
	}
	if err != nil {
		return nil, errors.New("not valid base64 (expected base64 of {\"username\": \"...\", \"password\": \"...\"} or of user:password, or none)")
	}
	if !utf8.Valid(raw) {
		return nil, errors.New("base64 decodes to binary data, not credentials")
	}
	text := strings.TrimRight(string(raw), "\r\n")
	if strings.HasPrefix(strings.TrimSpace(text), "{") {
		var j struct {
			Username *string `json:"username"`
			Password *string `json:"password"`
		}
		if err := json.Unmarshal([]byte(text), &j); err != nil {
			// The JSON error could quote part of the secret: do not wrap it.
			return nil, errors.New("base64 decodes to malformed JSON (expected {\"username\": \"...\", \"password\": \"...\"})")
		}
		if j.Username == nil || *j.Username == "" {
			if j.Password == nil || *j.Password == "" {
				return nil, errors.New("decoded JSON has no username or password (write auth: none for anonymous access)")
			}
			return nil, errors.New("decoded JSON has a password but no username")
		}
		a := &Auth{Username: *j.Username}
		if j.Password != nil {
			a.Password = *j.Password
		}
		return a, nil
	}
	user, pass, ok := strings.Cut(text, ":")
	if !ok {
		return nil, errors.New("base64 decodes to neither JSON {\"username\": ..., \"password\": ...} nor user:password")
	}
	if user == "" {
		return nil, errors.New("decoded user:password has an empty user")
	}
	return &Auth{Username: user, Password: pass}, nil
}
