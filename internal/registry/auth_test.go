package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
)

// basicRegistry requires Basic alice:s3cret on every /v2/ request.
func basicRegistry() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != "alice" || p != "s3cret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
			return
		}
		w.WriteHeader(http.StatusOK)
	})
}

func TestCheckAuthBasic(t *testing.T) {
	srv := httptest.NewServer(basicRegistry())
	defer srv.Close()
	host := hostOf(t, srv)
	c, _ := newTestClient(t, Options{})
	reg, err := name.NewRegistry(host, c.NameOptions(host)...)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	scope := "repository:foo/bar:pull"

	k, _ := NewKeychain("")
	k.fallback = nil
	k.Set(host, "alice", "s3cret")
	good, _ := k.Resolve(host)
	if err := c.CheckAuth(ctx, reg, good, scope); err != nil {
		t.Fatalf("right password: %v", err)
	}

	k.Set(host, "alice", "wrong-pa55word")
	bad, _ := k.Resolve(host)
	err = c.CheckAuth(ctx, reg, bad, scope)
	if !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong password: err = %v, want ErrUnauthorized", err)
	}
	want := fmt.Sprintf("registry %s: authentication failed for user \"alice\": 401 Unauthorized", host)
	if !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error %q\nwant prefix %q", err, want)
	}
	if strings.Contains(err.Error(), "wrong-pa55word") {
		t.Errorf("error leaks the password: %q", err)
	}

	if err := c.CheckAuth(ctx, reg, authn.Anonymous, scope); !errors.Is(err, ErrUnauthorized) ||
		!strings.Contains(err.Error(), "anonymous access") {
		t.Errorf("anonymous against an auth registry: %v", err)
	}
}

// bearerRegistry challenges with Bearer; its token service checks Basic
// alice:s3cret and refuses anything else.
func bearerRegistry(t *testing.T) *httptest.Server {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/token":
			u, p, ok := r.BasicAuth()
			if !ok || u != "alice" || p != "s3cret" {
				w.WriteHeader(http.StatusUnauthorized)
				_, _ = io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}`)
				return
			}
			if got := r.URL.Query().Get("scope"); got != "repository:foo/bar:pull" {
				t.Errorf("token scope = %q", got)
			}
			_ = json.NewEncoder(w).Encode(map[string]string{"token": "tok-123"})
		default:
			if r.Header.Get("Authorization") != "Bearer tok-123" {
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test"`, srv.URL))
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			w.WriteHeader(http.StatusOK)
		}
	}))
	return srv
}

func TestCheckAuthBearer(t *testing.T) {
	srv := bearerRegistry(t)
	defer srv.Close()
	host := hostOf(t, srv)
	c, _ := newTestClient(t, Options{})
	reg, _ := name.NewRegistry(host, c.NameOptions(host)...)
	ctx := context.Background()
	if err := c.CheckAuth(ctx, reg, &authn.Basic{Username: "alice", Password: "s3cret"}, "repository:foo/bar:pull"); err != nil {
		t.Fatalf("right password: %v", err)
	}
	err := c.CheckAuth(ctx, reg, &authn.Basic{Username: "alice", Password: "nope-nope"}, "repository:foo/bar:pull")
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), `user "alice"`) {
		t.Fatalf("wrong password: err = %v, want ErrUnauthorized naming alice", err)
	}
	if strings.Contains(err.Error(), "nope-nope") {
		t.Errorf("error leaks the password: %q", err)
	}
}

func TestCheckAuthNoAuthRegistry(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := hostOf(t, srv)
	c, _ := newTestClient(t, Options{})
	reg, _ := name.NewRegistry(host, c.NameOptions(host)...)
	if err := c.CheckAuth(context.Background(), reg, authn.Anonymous, "repository:foo/bar:push,pull"); err != nil {
		t.Fatalf("anonymous against an open registry: %v", err)
	}
	// Credentials sent to an open registry are fine too.
	if err := c.CheckAuth(context.Background(), reg, &authn.Basic{Username: "u", Password: "p"}, ""); err != nil {
		t.Fatalf("credentials against an open registry: %v", err)
	}
}
