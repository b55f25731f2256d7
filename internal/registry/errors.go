package registry

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Sentinel errors. Test for them with errors.Is; the concrete errors below
// carry the details (registry, status, hint).
var (
	// ErrUnauthorized: the registry rejected the credentials (401).
	ErrUnauthorized = errors.New("unauthorized")
	// ErrDenied: authenticated, but not allowed (403).
	ErrDenied = errors.New("denied")
	// ErrNotFound: repository, manifest or blob unknown (404).
	ErrNotFound = errors.New("not found")
	// ErrRateLimited: the registry asked us to slow down (429) and waiting
	// in-process is pointless or was not allowed.
	ErrRateLimited = errors.New("rate limited")
	// ErrUnavailable: the registry kept failing (5xx, 408) or could not be reached.
	ErrUnavailable = errors.New("registry unavailable")
	// ErrTLS: the TLS handshake failed (unknown CA, wrong host name, plain-http server...).
	ErrTLS = errors.New("TLS verification failed")
	// ErrPlainHTTPRefused: plain http to a host that is not loopback while --plain-http is off.
	ErrPlainHTTPRefused = errors.New("plain http not allowed")
	// ErrConfig: bad TLS or credential configuration (unreadable CA file, bad auth file...).
	ErrConfig = errors.New("bad registry configuration")
)

// MaxErrorBody caps how much of an error response body is ever read.
const MaxErrorBody = 64 << 10

const maxErrorBody = MaxErrorBody

// Error is a registry failure reduced to what an operator needs: which
// registry, which request (credentials removed), which status, and what to do.
type Error struct {
	Registry string // host[:port]
	Method   string
	URL      string // redacted: no userinfo, query values removed
	Status   int    // 0 when no HTTP response was received
	Detail   string // registry error codes/messages or the transport error
	Hint     string
	kind     error // sentinel, may be nil
	err      error // underlying error
}

func (e *Error) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "registry %s: ", e.Registry)
	if e.Method != "" {
		fmt.Fprintf(&b, "%s %s: ", e.Method, e.URL)
	}
	if e.Status != 0 {
		fmt.Fprintf(&b, "%d %s", e.Status, http.StatusText(e.Status))
		if e.Detail != "" {
			b.WriteString(" (" + e.Detail + ")")
		}
	} else {
		b.WriteString(e.Detail)
	}
	if e.Hint != "" {
		b.WriteString("; hint: " + e.Hint)
	}
	return b.String()
}

// Unwrap exposes both the sentinel and the underlying error to errors.Is/As.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.kind != nil {
		errs = append(errs, e.kind)
	}
	if e.err != nil {
		errs = append(errs, e.err)
	}
	return errs
}

// Explain turns an error from go-containerregistry or net/http (a
// *transport.Error, *url.Error, x509/TLS error, connection error) into an
// *Error naming the registry, request, status and a hint. Errors that already
// carry ferry's details (*Error, *AuthError, *RateLimitError) and errors
// unrelated to registries are returned unchanged. Explain(nil) is nil.
func Explain(err error) error {
	if err == nil {
		return nil
	}
	var (
		fe *Error
		ae *AuthError
		re *RateLimitError
	)
	if errors.As(err, &fe) || errors.As(err, &ae) || errors.As(err, &re) {
		return err
	}
	// A TLS failure wins over whatever the http fallback of a ping said
	// (go-containerregistry tries https, then http, for loopback hosts).
	var tle *TLSError
	if errors.As(err, &tle) {
		return tle
	}
	var te *transport.Error
	if errors.As(err, &te) {
		e := &Error{Status: te.StatusCode, err: err}
		if te.Request != nil {
			e.Method = te.Request.Method
			e.URL = redactURL(te.Request.URL)
			e.Registry = te.Request.URL.Host
		}
		var codes []string
		for _, d := range te.Errors {
			s := string(d.Code)
			if d.Message != "" {
				s += ": " + d.Message
			}
			codes = append(codes, s)
		}
		e.Detail = truncate(strings.Join(codes, "; "), 300)
		e.Hint, e.kind = classifyStatus(te)
		return e
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		e := &Error{Method: opMethod(ue.Op), err: err}
		if u, perr := url.Parse(ue.URL); perr == nil {
			e.URL = redactURL(u)
			e.Registry = u.Host
		}
		e.Detail = truncate(describeCause(ue.Err), 300)
		e.Hint, e.kind = classifyNetErr(ue.Err)
		if e.kind == nil {
			return err // e.g. context cancelled: keep the caller's error as is
		}
		return e
	}
	if hint, kind := classifyNetErr(err); kind != nil {
		return &Error{Detail: truncate(describeCause(err), 300), kind: kind, Hint: hint, err: err}
	}
	return err
}

func opMethod(op string) string {
	switch strings.ToLower(op) {
	case "get":
		return http.MethodGet
	case "head":
		return http.MethodHead
	case "put":
		return http.MethodPut
	case "post":
		return http.MethodPost
	case "patch":
		return http.MethodPatch
	case "delete":
		return http.MethodDelete
	}
	return strings.ToUpper(op)
}

func describeCause(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return err.Error()
}

func classifyStatus(te *transport.Error) (hint string, kind error) {
	for _, d := range te.Errors {
		if d.Code == transport.TooManyRequestsErrorCode {
			return "the registry is rate limiting; wait, authenticate for a higher limit, or use --mirror", ErrRateLimited
		}
	}
	switch te.StatusCode {
	case http.StatusUnauthorized:
		return "check the credentials (--username/--password-stdin, --auth-file, the mapping file's auth); for Harbor, check the project exists", ErrUnauthorized
	case http.StatusForbidden:
		return "the account lacks permission for this repository, or a quota is exceeded", ErrDenied
	case http.StatusNotFound:
		return "check the repository name and tag", ErrNotFound
	case http.StatusTooManyRequests:
		return "the registry is rate limiting; wait and try again", ErrRateLimited
	case http.StatusRequestTimeout, http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return "the registry kept failing after retries; try again later", ErrUnavailable
	case http.StatusRequestEntityTooLarge:
		return "a proxy in front of the registry limits the request size", nil
	}
	return "", nil
}

// classifyNetErr returns the sentinel and hint for a transport-level error,
// or (nil, "") when it is not one ferry recognises.
func classifyNetErr(err error) (hint string, kind error) {
	if isTLSError(err) {
		return tlsHint, ErrTLS
	}
	if errors.Is(err, ErrPlainHTTPRefused) {
		return "pass --plain-http if this registry really speaks plain http", ErrPlainHTTPRefused
	}
	if errors.Is(err, ErrConfig) {
		return "", ErrConfig
	}
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr):
		return "check the registry host name and DNS", ErrUnavailable
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens there: check host and port", ErrUnavailable
	case retryableNetErr(err):
		return "the connection kept failing after retries; check the network or proxy", ErrUnavailable
	}
	return "", nil
}

const tlsHint = "trust the registry's CA with --ca-cert FILE or --certs-dir DIR (DIR/<host:port>/ca.crt), or use --insecure-skip-tls-verify (or skip-tls-verify in the mapping file)"

func isTLSError(err error) bool {
	var (
		ua  x509.UnknownAuthorityError
		he  x509.HostnameError
		ci  x509.CertificateInvalidError
		cve *tls.CertificateVerificationError
		rhe tls.RecordHeaderError
		ae  tls.AlertError
	)
	return errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci) ||
		errors.As(err, &cve) || errors.As(err, &rhe) || errors.As(err, &ae) ||
		strings.Contains(err.Error(), "server gave HTTP response to HTTPS client")
}

// TLSError reports a failed TLS handshake with a registry.
type TLSError struct {
	Registry string
	Err      error
}

func (e *TLSError) Error() string {
	hint := tlsHint
	if strings.Contains(e.Err.Error(), "server gave HTTP response to HTTPS client") {
		hint = "the registry speaks plain http: pass --plain-http"
	}
	return fmt.Sprintf("registry %s: %s; hint: %s", e.Registry, describeCause(e.Err), hint)
}

// Unwrap returns ErrTLS and the underlying error.
func (e *TLSError) Unwrap() []error { return []error{ErrTLS, e.Err} }

// AuthError reports rejected credentials. It never contains the password.
type AuthError struct {
	Registry string
	User     string // "" for anonymous
	Status   int
	Detail   string
}

func (e *AuthError) Error() string {
	who := "anonymous access"
	if e.User != "" {
		who = fmt.Sprintf("user %q", e.User)
	}
	s := fmt.Sprintf("registry %s: authentication failed for %s: %d %s", e.Registry, who, e.Status, http.StatusText(e.Status))
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s + "; hint: check --username/--password-stdin, --auth-file or the mapping file's auth"
}

// Is makes errors.Is(err, ErrUnauthorized) true.
func (e *AuthError) Is(target error) bool { return target == ErrUnauthorized }

// RateLimitError is returned by the transport when a 429 is not worth
// retrying in-process: Docker Hub's pull limit (TOOMANYREQUESTS) without a
// Retry-After, or any Retry-After longer than RetryPolicy.MaxWait.
type RateLimitError struct {
	Registry   string
	Method     string
	URL        string // redacted
	DockerHub  bool
	Limit      string        // ratelimit-limit header, e.g. "100;w=21600"
	Remaining  string        // ratelimit-remaining header, e.g. "0;w=21600"
	RetryAfter time.Duration // 0 if the registry gave none
	Message    string        // the registry's own message, truncated
}

func (e *RateLimitError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "registry %s: %s %s: 429 Too Many Requests", e.Registry, e.Method, e.URL)
	if e.DockerHub {
		b.WriteString(": Docker Hub pull rate limit reached")
		if e.Limit != "" || e.Remaining != "" {
			fmt.Fprintf(&b, " (ratelimit-limit %s, ratelimit-remaining %s)", orNone(e.Limit), orNone(e.Remaining))
		}
	} else if e.Message != "" {
		b.WriteString(" (" + e.Message + ")")
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, "; the registry asks to retry after %s", e.RetryAfter.Round(time.Second))
	}
	if e.DockerHub {
		b.WriteString("; hint: the limit counts manifest GETs per 6 hours per IP (anonymous 100, free account 200): log in (--username/--password-stdin or --auth-file), use --mirror SOURCE=PROXY for a pull-through cache, or try again when the window resets")
	} else {
		b.WriteString("; hint: wait and try again, or lower --jobs")
	}
	return b.String()
}

// Is makes errors.Is(err, ErrRateLimited) true.
func (e *RateLimitError) Is(target error) bool { return target == ErrRateLimited }

func orNone(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// redactURL renders u without userinfo and with query values removed
// (presigned blob URLs carry signatures there).
func redactURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		q := c.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		c.RawQuery = q.Encode()
	}
	return c.String()
}

func truncate(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
