package names

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Digest errors, tested with errors.Is.
var (
	// ErrDigest: the string is not a digest (no algorithm, bad characters,
	// wrong length of hex for a known algorithm).
	ErrDigest = errors.New("malformed digest")
	// ErrAlgorithm: a well-formed digest in an algorithm the caller does
	// not accept.
	ErrAlgorithm = errors.New("unsupported digest algorithm")
)

// digestRE is the OCI image specification's digest grammar:
// algorithm ":" encoded, where algorithm is lower-case components joined by
// "+", ".", "_" or "-".
var digestRE = regexp.MustCompile(`^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`)

// hexLength is the length of the hex encoding of the registered algorithms;
// their encoded part must be lower-case hex of exactly this length.
var hexLength = map[string]int{"sha256": 64, "sha512": 128}

// Digest is a parsed digest.
type Digest struct {
	Algorithm string // "sha256"
	Hex       string // the encoded part
}

// String returns "algorithm:hex".
func (d Digest) String() string { return d.Algorithm + ":" + d.Hex }

// ParseDigest parses a digest in the OCI grammar ("sha256:<64 hex>"). The
// registered algorithms, sha256 and sha512, must carry lower-case hex of
// their exact length; other algorithms need only match the grammar. The
// error is ErrDigest (errors.Is) and quotes at most 80 bytes of s.
func ParseDigest(s string) (Digest, error) {
	alg, hex, _ := strings.Cut(s, ":")
	if n, ok := hexLength[alg]; ok && !isLowerHex(hex, n) {
		return Digest{}, &digestError{fmt.Sprintf("malformed %s digest %q (%d lower-case hex digits expected)", alg, clip(s), n)}
	}
	if !digestRE.MatchString(s) {
		return Digest{}, &digestError{fmt.Sprintf("malformed digest %q (algorithm:hex expected)", clip(s))}
	}
	return Digest{Algorithm: alg, Hex: hex}, nil
}

// digestError says what is wrong with a digest and is ErrDigest.
type digestError struct{ msg string }

func (e *digestError) Error() string        { return e.msg }
func (e *digestError) Is(target error) bool { return target == ErrDigest }

// ValidDigest reports whether ParseDigest accepts s.
func ValidDigest(s string) bool { _, err := ParseDigest(s); return err == nil }

// ParseSHA256 parses a digest that must be sha256 with 64 lower-case hex
// digits, the only kind ferry stores; it returns the hex part, which is safe
// to use as a file name. A well-formed digest in another algorithm gives an
// error wrapping ErrAlgorithm; anything else wraps ErrDigest.
func ParseSHA256(s string) (hex string, err error) {
	d, err := ParseDigest(s)
	if err != nil {
		return "", err
	}
	if d.Algorithm != "sha256" {
		return "", fmt.Errorf("%w %q in %q (ferry stores sha256 only)", ErrAlgorithm, clip(d.Algorithm), clip(s))
	}
	return d.Hex, nil
}

// IsSHA256Hex reports whether s is 64 lower-case hex digits, the encoded
// part of a sha256 digest.
func IsSHA256Hex(s string) bool { return isLowerHex(s, 64) }

func isLowerHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// clip shortens untrusted text before it goes into an error message.
func clip(s string) string {
	const max = 80
	if len(s) > max {
		return s[:max] + "…"
	}
	return s
}
