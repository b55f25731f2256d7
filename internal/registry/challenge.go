package registry

import (
	"net/http"
	"strings"
)

// authChallenge is one challenge of a WWW-Authenticate header (RFC 7235):
// a scheme (lower-cased) and its parameters (names lower-cased).
type authChallenge struct {
	scheme string
	params map[string]string
}

// challenges parses every WWW-Authenticate header of resp.
func challenges(resp *http.Response) []authChallenge {
	return parseChallenges(resp.Header.Values("WWW-Authenticate"))
}

// pickChallenge returns the first Bearer or Basic challenge (the ones ferry
// can answer), else the first one, else a challenge with no scheme.
func pickChallenge(cs []authChallenge) authChallenge {
	for _, c := range cs {
		if c.scheme == "bearer" || c.scheme == "basic" {
			return c
		}
	}
	if len(cs) > 0 {
		return cs[0]
	}
	return authChallenge{params: map[string]string{}}
}

// parseChallenges reads headers of the form
//
//	Bearer realm="https://auth.example/token",service="registry",scope="repository:a:pull", Basic realm="x"
//
// A header may hold several challenges; a parameter value is a token or a
// quoted string with backslash escapes. Malformed input never panics: what
// cannot be read is skipped.
func parseChallenges(headers []string) []authChallenge {
	var out []authChallenge
	for _, h := range headers {
		l := lexer{s: h}
		cur := -1
		for {
			l.skip(" \t,")
			if l.eof() {
				break
			}
			tok := l.token()
			if tok == "" {
				l.i++ // a character that starts nothing: skip it
				continue
			}
			l.skip(" \t")
			if cur >= 0 && l.peek() == '=' {
				l.i++
				l.skip(" \t")
				v := ""
				if l.peek() == '"' {
					v = l.quoted()
				} else {
					v = l.token()
				}
				out[cur].params[strings.ToLower(tok)] = v
				continue
			}
			out = append(out, authChallenge{scheme: strings.ToLower(tok), params: map[string]string{}})
			cur = len(out) - 1
		}
	}
	return out
}

type lexer struct {
	s string
	i int
}

func (l *lexer) eof() bool { return l.i >= len(l.s) }

func (l *lexer) peek() byte {
	if l.eof() {
		return 0
	}
	return l.s[l.i]
}

func (l *lexer) skip(chars string) {
	for !l.eof() && strings.IndexByte(chars, l.s[l.i]) >= 0 {
		l.i++
	}
}

// token reads an RFC 7230 token (tchar+).
func (l *lexer) token() string {
	start := l.i
	for !l.eof() && isTokenChar(l.s[l.i]) {
		l.i++
	}
	return l.s[start:l.i]
}

// quoted reads a quoted string starting at '"' and returns it unescaped. An
// unterminated string ends at the end of the input.
func (l *lexer) quoted() string {
	l.i++ // opening quote
	var b strings.Builder
	for !l.eof() {
		c := l.s[l.i]
		l.i++
		switch {
		case c == '"':
			return b.String()
		case c == '\\' && !l.eof():
			b.WriteByte(l.s[l.i])
			l.i++
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
