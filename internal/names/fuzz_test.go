package names

import (
	"strings"
	"testing"
)

// FuzzParse feeds one string to every parser and checks what each accepts
// against the others: nothing panics, an accepted reference round-trips
// through its canonical form, and an accepted digest is safe as a file name.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"docker.io/library/redis:7.2",
		"registry.hub.docker.com/redis@sha256:" + strings.Repeat("a", 64),
		"127.0.0.1:5000/spaceone/console:1.11.0",
		"[::1]:5000/a/b:c",
		"sha256:" + strings.Repeat("0", 64),
		"sha512:" + strings.Repeat("0", 128),
		"sha256:../../etc/passwd",
		"https://index.docker.io/v1/",
		"quay.io/a__b--c.d/e:_x",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ref, err := ParseReference(s); err == nil {
			checkReference(t, s, ref)
		}
		if hex, err := ParseSHA256(s); err == nil {
			if len(hex) != 64 || strings.ContainsAny(hex, "/.\\") || !strings.HasSuffix(s, hex) {
				t.Fatalf("ParseSHA256(%q) = %q", s, hex)
			}
		}
		if d, err := ParseDigest(s); err == nil && d.String() != s {
			t.Fatalf("ParseDigest(%q).String() = %q", s, d.String())
		}
		if ValidRepository(s) && (strings.Contains(s, "..") || strings.HasPrefix(s, "/") || len(s) > MaxNameLength) {
			t.Fatalf("ValidRepository(%q): a path that escapes or is too long", s)
		}
		if ValidTag(s) && (len(s) > MaxTagLength || strings.ContainsAny(s, ":/@")) {
			t.Fatalf("ValidTag(%q)", s)
		}
		h := CanonicalHost(s)
		if CanonicalHost(h) != h {
			t.Fatalf("CanonicalHost is not idempotent on %q: %q then %q", s, h, CanonicalHost(h))
		}
	})
}

func checkReference(t *testing.T, s string, ref Reference) {
	t.Helper()
	if !ValidRepository(ref.Repository) || (ref.Tag != "" && !ValidTag(ref.Tag)) || (ref.Digest != "" && !ValidDigest(ref.Digest)) {
		t.Fatalf("ParseReference(%q) accepted invalid parts: %+v", s, ref)
	}
	if ref.Host != CanonicalHost(ref.Host) {
		t.Fatalf("ParseReference(%q): host %q is not canonical", s, ref.Host)
	}
	again, err := ParseReference(ref.String())
	if err != nil || again != ref {
		t.Fatalf("ParseReference(%q) = %+v, but its String %q parses as %+v, %v", s, ref, ref.String(), again, err)
	}
}
