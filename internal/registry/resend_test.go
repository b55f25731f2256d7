package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TestExpiredTokenMidUploadResendsTheBody: when a token expires while a
// blob is being uploaded, go-containerregistry's Bearer transport refreshes
// it and sends the same request again; that second send must carry the
// whole body, not the drained reader (net/http rewinds it through GetBody,
// which push sets on every blob PUT).
func TestExpiredTokenMidUploadResendsTheBody(t *testing.T) {
	payload := bytes.Repeat([]byte("layer bytes "), 100000) // ~1.2 MB
	var tokens, puts atomic.Int64
	var srvURL string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/token":
			n := tokens.Add(1)
			fmt.Fprintf(w, `{"token":"t%d"}`, n)
		case r.URL.Path == "/v2/" && r.Header.Get("Authorization") == "":
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test"`, srvURL+"/token"))
			w.WriteHeader(http.StatusUnauthorized)
		case r.Method == http.MethodPut:
			n := puts.Add(1)
			body, _ := io.ReadAll(r.Body)
			want := fmt.Sprintf("Bearer t%d", tokens.Load())
			if n == 1 || r.Header.Get("Authorization") != want {
				// The token has just expired.
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm=%q,service="test",scope="repository:x:push,pull",error="invalid_token"`, srvURL+"/token"))
				w.WriteHeader(http.StatusUnauthorized)
				return
			}
			if !bytes.Equal(body, payload) {
				http.Error(w, fmt.Sprintf("got %d bytes, want %d", len(body), len(payload)), http.StatusBadRequest)
				return
			}
			w.WriteHeader(http.StatusCreated)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	srvURL = srv.URL
	c, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(srv.URL, "http://")
	reg, err := name.NewRegistry(host, c.NameOptions(host)...)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := transport.NewWithContext(context.Background(), reg, authn.FromConfig(authn.AuthConfig{Username: "u", Password: "p"}), c.Transport(), []string{"repository:x:push,pull"})
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, "http://"+host+"/v2/x/blobs/uploads/u?digest=sha256:x", bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(payload)), nil }
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("upload after a token refresh: %v", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload after a token refresh: %s %s", resp.Status, msg)
	}
	if puts.Load() != 2 || tokens.Load() != 2 {
		t.Fatalf("puts %d, tokens %d; want 2 and 2", puts.Load(), tokens.Load())
	}
}
