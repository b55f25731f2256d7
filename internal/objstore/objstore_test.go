package objstore_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/ferry-airgap/ferry/internal/objstore"
	"github.com/ferry-airgap/ferry/test/harness"
)

func TestParseLocation(t *testing.T) {
	for in, want := range map[string]objstore.Location{
		"s3://bucket":             {Bucket: "bucket"},
		"s3://bucket/":            {Bucket: "bucket"},
		"s3://bucket/a/b/":        {Bucket: "bucket", Prefix: "a/b"},
		"s3://my-bucket/cache/v1": {Bucket: "my-bucket", Prefix: "cache/v1"},
	} {
		got, err := objstore.ParseLocation(in)
		if err != nil || got != want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "bucket/x", "http://bucket/x", "s3://", "s3:///x", "s3://ab", "s3://a:b@c/x", "s3://bucket/a//b"} {
		if _, err := objstore.ParseLocation(in); !errors.Is(err, objstore.ErrBadLocation) {
			t.Errorf("ParseLocation(%q): %v, want ErrBadLocation", in, err)
		}
	}
}

func TestOpenRefusesPlainHTTPToOtherHosts(t *testing.T) {
	loc := objstore.Location{Bucket: "bucket"}
	env := func(string) string { return "" }
	for _, ep := range []string{"http://minio.corp:9000", "http://10.0.0.1:9000", "ftp://127.0.0.1", "http://127.0.0.1:9000/path"} {
		if _, err := objstore.Open(loc, objstore.Options{Endpoint: ep, Getenv: env}); !errors.Is(err, objstore.ErrBadLocation) {
			t.Errorf("endpoint %s: %v, want ErrBadLocation", ep, err)
		}
	}
	for _, ep := range []string{"http://127.0.0.1:9000", "http://localhost:9000", "https://minio.corp", "http://[::1]:9000"} {
		if _, err := objstore.Open(loc, objstore.Options{Endpoint: ep, Getenv: env}); err != nil {
			t.Errorf("endpoint %s: %v", ep, err)
		}
	}
}

// TestConditionalCreateOnSeaweed: If-None-Match: * gives exactly one
// winner among concurrent creators; the others get ErrPrecondition and the
// object holds the winner's bytes. If-Match replaces only the version read.
func TestConditionalCreateOnSeaweed(t *testing.T) {
	sw := harness.StartSeaweed(t)
	st, err := sw.Store(t, sw.Bucket(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body := strings.Repeat(string(rune('a'+i)), 1000)
			errs[i] = st.Create(ctx, "k/one", strings.NewReader(body), int64(len(body)), objstore.PutOptions{})
		}()
	}
	wg.Wait()
	won := -1
	for i, err := range errs {
		switch {
		case err == nil && won >= 0:
			t.Errorf("creators %d and %d both won", won, i)
		case err == nil:
			won = i
		case !errors.Is(err, objstore.ErrPrecondition):
			t.Errorf("creator %d: %v, want ErrPrecondition", i, err)
		}
	}
	if won < 0 {
		t.Fatal("no creator won")
	}
	b, info, err := st.Get(ctx, "k/one", 1<<20)
	if err != nil || string(b) != strings.Repeat(string(rune('a'+won)), 1000) {
		t.Fatalf("object after the race: %q, %v; want the winner's bytes", b[:min(len(b), 10)], err)
	}
	if err := st.Create(ctx, "k/one", strings.NewReader("x"), 1, objstore.PutOptions{}); !errors.Is(err, objstore.ErrPrecondition) {
		t.Errorf("create on an existing key: %v, want ErrPrecondition", err)
	}
	if err := st.Replace(ctx, "k/one", "0123456789abcdef0123456789abcdef", strings.NewReader("y"), 1, objstore.PutOptions{}); !errors.Is(err, objstore.ErrPrecondition) {
		t.Errorf("replace with a wrong ETag: %v, want ErrPrecondition", err)
	}
	if err := st.Replace(ctx, "k/one", info.ETag, strings.NewReader("z"), 1, objstore.PutOptions{}); err != nil {
		t.Errorf("replace with the current ETag: %v", err)
	}
	if b, _, err := st.Get(ctx, "k/one", 10); err != nil || string(b) != "z" {
		t.Errorf("after replace: %q, %v", b, err)
	}
	if _, err := st.Stat(ctx, "k/none"); !errors.Is(err, objstore.ErrNotExist) {
		t.Errorf("stat of a missing key: %v, want ErrNotExist", err)
	}
	var keys []string
	if err := st.List(ctx, "k/", func(i objstore.Info) error { keys = append(keys, i.Key); return nil }); err != nil || len(keys) != 1 || keys[0] != "k/one" {
		t.Errorf("list: %v, %v", keys, err)
	}
	if err := st.Remove(ctx, "k/one"); err != nil {
		t.Fatal(err)
	}
	if err := st.Remove(ctx, "k/one"); err != nil {
		t.Errorf("removing a missing key: %v", err)
	}
}

// TestRangeReadOnSeaweed: an opened object reads from any offset.
func TestRangeReadOnSeaweed(t *testing.T) {
	sw := harness.StartSeaweed(t)
	st, err := sw.Store(t, sw.Bucket(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	body := bytes.Repeat([]byte("0123456789"), 100000)
	if _, err := st.Put(ctx, "p/x", bytes.NewReader(body), int64(len(body)), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	obj, info, err := st.Open(ctx, "p/x")
	if err != nil || info.Size != int64(len(body)) {
		t.Fatalf("open: %+v, %v", info, err)
	}
	defer obj.Close()
	buf := make([]byte, 7)
	if _, err := obj.ReadAt(buf, 500003); err != nil || string(buf) != "3456789" {
		t.Errorf("ReadAt: %q, %v", buf, err)
	}
}

// failingReader yields n bytes, then fails.
type failingReader struct{ n int }

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n == 0 {
		return 0, errors.New("source failed")
	}
	k := min(len(p), f.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	f.n -= k
	return k, nil
}

// TestPutCutLeavesNothingOnSeaweed: a PUT whose reader fails, or ends
// short of the size, creates no object and leaves an existing one as it
// was (the premise of the static tree's checked uploads); Put returns the
// ETag a listing then shows; Copy copies the bytes with new headers.
func TestPutCutLeavesNothingOnSeaweed(t *testing.T) {
	sw := harness.StartSeaweed(t)
	st, err := sw.Store(t, sw.Bucket(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const size = 3 << 20
	if _, err := st.Put(ctx, "cut/new", &failingReader{n: size - 1}, size, objstore.PutOptions{}); err == nil {
		t.Error("a PUT whose reader failed succeeded")
	}
	if _, err := st.Put(ctx, "cut/short", bytes.NewReader(make([]byte, size-1)), size, objstore.PutOptions{}); err == nil {
		t.Error("a PUT one byte short succeeded")
	}
	for _, k := range []string{"cut/new", "cut/short"} {
		if _, err := st.Stat(ctx, k); !errors.Is(err, objstore.ErrNotExist) {
			t.Errorf("%s after a cut PUT: %v, want ErrNotExist", k, err)
		}
	}
	etag, err := st.Put(ctx, "cut/old", strings.NewReader("old"), 3, objstore.PutOptions{ContentType: "text/plain"})
	if err != nil || etag == "" {
		t.Fatalf("put: %q, %v", etag, err)
	}
	if _, err := st.Put(ctx, "cut/old", &failingReader{n: 2}, 3, objstore.PutOptions{}); err == nil {
		t.Error("a cut overwrite succeeded")
	}
	if b, info, err := st.Get(ctx, "cut/old", 10); err != nil || string(b) != "old" || info.ETag != etag {
		t.Errorf("after a cut overwrite: %q %+v %v, want old with ETag %s", b, info, err, etag)
	}
	cp, err := st.Copy(ctx, "cut/copy", "cut/old", objstore.PutOptions{ContentType: "application/json", Metadata: map[string]string{"docker-content-digest": "sha256:x"}})
	if err != nil {
		t.Fatal(err)
	}
	var listed string
	mustList(t, st, "cut/copy", func(i objstore.Info) { listed = i.ETag })
	if listed != cp {
		t.Errorf("copy's ETag %q, listed %q", cp, listed)
	}
	obj, info, err := st.Open(ctx, "cut/copy")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(obj)
	obj.Close()
	if string(b) != "old" || info.ETag != cp || info.ContentType != "application/json" {
		t.Errorf("copy: %q %+v", b, info)
	}
}

func mustList(t *testing.T, st *objstore.Store, prefix string, fn func(objstore.Info)) {
	t.Helper()
	if err := st.List(context.Background(), prefix, func(i objstore.Info) error { fn(i); return nil }); err != nil {
		t.Fatal(err)
	}
}

// TestMain stops the SeaweedFS the tests started.
func TestMain(m *testing.M) {
	code := m.Run()
	harness.StopSeaweed()
	os.Exit(code)
}
