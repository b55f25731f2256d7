package push

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ferry-airgap/ferry/internal/registry"
)

// uploadServer is a registry's upload API: POST opens a session, PUT
// completes it, DELETE cancels it. The PUT of session cutSession (0 =
// every session) is cut after cutAt bytes (connection closed), and that
// session then refuses another PUT as a real registry does (it holds part
// of a body).
type uploadServer struct {
	*httptest.Server
	blob       []byte
	cutSession int
	cutAt      int
	status     int // answer every PUT with this status when set

	mu       sync.Mutex
	sessions int
	puts     []int // session of each PUT
	deleted  []int
	stored   []byte
}

func newUploadServer(t *testing.T, blob []byte) *uploadServer {
	s := &uploadServer{blob: blob, cutSession: 1, cutAt: 1000}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.Start()
	t.Cleanup(s.Close)
	return s
}

func (s *uploadServer) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/v2/" {
		w.WriteHeader(http.StatusOK) // the ping: no auth
		return
	}
	var n int
	if _, err := fmt.Sscanf(r.URL.Path, "/v2/x/blobs/uploads/%d", &n); err != nil && r.Method != http.MethodPost {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.Method {
	case http.MethodPost:
		s.sessions++
		w.Header().Set("Location", fmt.Sprintf("/v2/x/blobs/uploads/%d", s.sessions))
		w.WriteHeader(http.StatusAccepted)
	case http.MethodDelete:
		s.deleted = append(s.deleted, n)
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPut:
		s.puts = append(s.puts, n)
		if s.status != 0 {
			w.WriteHeader(s.status)
			return
		}
		if n == s.cutSession || s.cutSession == 0 {
			if len(s.puts) > 1 && s.puts[len(s.puts)-2] == n && s.cutSession != 0 {
				http.Error(w, `{"errors":[{"code":"BLOB_UPLOAD_INVALID"}]}`, http.StatusNotFound)
				return
			}
			_, _ = io.CopyN(io.Discard, r.Body, int64(s.cutAt))
			conn, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = conn.Close()
			}
			return
		}
		body, _ := io.ReadAll(r.Body)
		sum := sha256.Sum256(body)
		if r.URL.Query().Get("digest") != "sha256:"+hex.EncodeToString(sum[:]) {
			http.Error(w, `{"errors":[{"code":"DIGEST_INVALID"}]}`, http.StatusBadRequest)
			return
		}
		s.stored = body
		w.WriteHeader(http.StatusCreated)
	}
}

// seen returns the sessions PUT to, those deleted, and the sessions opened.
func (s *uploadServer) seen() (puts, deleted string, sessions int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprint(s.puts), fmt.Sprint(s.deleted), s.sessions
}

func uploadClient(t *testing.T, s *uploadServer) *repoClient {
	t.Helper()
	c, err := registry.New(registry.Options{PlainHTTP: true, Retry: registry.RetryPolicy{Attempts: 3, Base: time.Millisecond, MaxWait: time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(s.URL, "http://")
	ref, err := name.NewRepository(host+"/x", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.Repo(context.Background(), ref, authn.Anonymous)
	if err != nil {
		t.Fatal(err)
	}
	return &repoClient{host: host, repo: "x", base: s.URL, hc: r, retry: c}
}

func blobAndDigest() ([]byte, v1.Hash) {
	blob := bytes.Repeat([]byte("layer "), 50000)
	sum := sha256.Sum256(blob)
	return blob, v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(sum[:])}
}

func TestPutBlobCutRestartsInANewSession(t *testing.T) {
	blob, d := blobAndDigest()
	s := newUploadServer(t, blob)
	rc := uploadClient(t, s)
	ctx := context.Background()
	loc, err := rc.startUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	opens := 0
	err = rc.putBlob(ctx, loc, d, int64(len(blob)), func() (readCloser, error) {
		opens++
		return io.NopCloser(bytes.NewReader(blob)), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	stored := s.stored
	s.mu.Unlock()
	if !bytes.Equal(stored, blob) {
		t.Fatal("the registry does not hold the blob")
	}
	if puts, deleted, _ := s.seen(); puts != "[1 2]" || deleted != "[1]" || opens != 2 {
		t.Errorf("PUTs to sessions %v, deleted %v, source opened %d times; want [1 2], [1], 2", puts, deleted, opens)
	}
}

func TestPutBlobNotRetriedOnAFinalStatus(t *testing.T) {
	blob, d := blobAndDigest()
	s := newUploadServer(t, blob)
	s.status = http.StatusForbidden
	rc := uploadClient(t, s)
	ctx := context.Background()
	loc, err := rc.startUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = rc.putBlob(ctx, loc, d, int64(len(blob)), func() (readCloser, error) { return io.NopCloser(bytes.NewReader(blob)), nil })
	if err == nil || !strings.Contains(err.Error(), "403") {
		t.Fatalf("err = %v, want the 403", err)
	}
	if puts, _, sessions := s.seen(); puts != "[1]" || sessions != 1 {
		t.Errorf("PUTs to sessions %s of %d, want [1] of 1", puts, sessions)
	}
}

func TestPutBlobCutsOutlastTheBudget(t *testing.T) {
	blob, d := blobAndDigest()
	s := newUploadServer(t, blob)
	s.cutSession = 0 // a registry that always drops the connection
	rc := uploadClient(t, s)
	ctx := context.Background()
	loc, err := rc.startUpload(ctx)
	if err != nil {
		t.Fatal(err)
	}
	err = rc.putBlob(ctx, loc, d, int64(len(blob)), func() (readCloser, error) { return io.NopCloser(bytes.NewReader(blob)), nil })
	if err == nil {
		t.Fatal("a registry that always drops the connection took the blob")
	}
	if puts, _, _ := s.seen(); puts != "[1 2 3]" {
		t.Errorf("PUTs to sessions %v, want [1 2 3] (the retry budget, a new session each)", puts)
	}
}
