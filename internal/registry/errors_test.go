package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestExplainRegistryErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.Contains(r.URL.Path, "/denied/"):
			w.WriteHeader(http.StatusForbidden)
			_, _ = io.WriteString(w, `{"errors":[{"code":"DENIED","message":"Quota exceeded"}]}`)
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}`)
		}
	}))
	defer srv.Close()
	host := hostOf(t, srv)
	c, _ := newTestClient(t, Options{})
	ctx := context.Background()

	cases := []struct {
		repo string
		kind error
		want []string
	}{
		{"foo/bar", ErrNotFound, []string{"registry " + host, "GET http://" + host + "/v2/foo/bar/manifests/v1", "404 Not Found", "MANIFEST_UNKNOWN", "hint:"}},
		{"denied/bar", ErrDenied, []string{"403 Forbidden", "Quota exceeded", "hint:"}},
	}
	for _, tc := range cases {
		ref, _ := name.ParseReference(host+"/"+tc.repo+":v1", c.NameOptions(host)...)
		_, err := remote.Get(ref, c.RemoteOptions(ctx, host, nil)...)
		e := Explain(err)
		if !errors.Is(e, tc.kind) {
			t.Errorf("%s: Explain(%v) not %v", tc.repo, err, tc.kind)
		}
		for _, w := range tc.want {
			if !strings.Contains(e.Error(), w) {
				t.Errorf("%s: %q lacks %q", tc.repo, e, w)
			}
		}
		var fe *Error
		if !errors.As(e, &fe) || fe.Registry != host {
			t.Errorf("%s: not an *Error naming %s: %#v", tc.repo, host, e)
		}
	}
}

func TestExplainRemovesCredentialsFromURLs(t *testing.T) {
	u, _ := url.Parse("https://alice:hunter2@reg.example/v2/x/blobs/sha256:ab?X-Amz-Signature=topsecret")
	err := Explain(&url.Error{Op: "Get", URL: u.String(), Err: io.ErrUnexpectedEOF})
	s := err.Error()
	for _, secret := range []string{"hunter2", "topsecret", "alice"} {
		if strings.Contains(s, secret) {
			t.Errorf("%q contains %q", s, secret)
		}
	}
	if !strings.Contains(s, "registry reg.example: GET https://reg.example/v2/x/blobs/sha256:ab") || !errors.Is(err, ErrUnavailable) {
		t.Errorf("Explain = %q", s)
	}
}

func TestExplainPassesThrough(t *testing.T) {
	if Explain(nil) != nil {
		t.Error("Explain(nil) != nil")
	}
	plain := errors.New("something else")
	if Explain(plain) != plain {
		t.Error("unrelated errors must pass unchanged")
	}
	canceled := &url.Error{Op: "Get", URL: "https://r/v2/", Err: context.Canceled}
	if got := Explain(canceled); !errors.Is(got, context.Canceled) {
		t.Errorf("Explain(cancel) = %v", got)
	}
}

func TestCanonicalHost(t *testing.T) {
	for in, want := range map[string]string{
		"Harbor.Internal":             "harbor.internal",
		"https://harbor.internal/v2/": "harbor.internal",
		"harbor.internal:443":         "harbor.internal",
		"harbor.internal:8443":        "harbor.internal:8443",
		"registry.hub.docker.com":     DockerHub,
		"https://index.docker.io/v1/": DockerHub,
		"docker.io":                   DockerHub,
		"registry-1.docker.io":        DockerHub,
	} {
		if got := canonicalHost(in); got != want {
			t.Errorf("canonicalHost(%q) = %q, want %q", in, got, want)
		}
	}
	for h, want := range map[string]bool{"localhost:5000": true, "127.0.0.2:1": true, "[::1]:5000": true, "10.0.0.1:5000": false, "example.com": false} {
		if isLoopback(h) != want {
			t.Errorf("isLoopback(%q) != %v", h, want)
		}
	}
}
